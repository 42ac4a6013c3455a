// Copyright a2llm. One connection to the a2llm bridge server through the native client core, plus the receive thread.
//
// Threads (ARCHITECTURE principle 9): the native core receives on its own I/O thread; FA2LLMConnection's FRunnable is
// the single consumer of a2llm_client_poll and hands text / turn / connection events to the game thread through an
// SPSC queue; the audio render thread pulls answer audio (ReadAudio) and records the A/V clock; the game thread
// dequeues events, estimates the playhead and samples the face (a2llm_client_face_frame_at is thread-safe).
#pragma once

#include "CoreMinimal.h"
#include "Containers/Queue.h"
#include "HAL/CriticalSection.h"
#include "HAL/Runnable.h"
#include "HAL/ThreadSafeBool.h"
#include "A2LLMCharacterApi.h"
#include "a2llm_client.h"

class FRunnableThread;

struct FA2LLMConnectionSettings
{
	FString Endpoint = TEXT("tcp://127.0.0.1:5555");
	FString ClientName = TEXT("a2llm-unreal");
	uint32 JitterTargetMs = 100;
	/** Idle face frames between turns (protocol version 2). */
	bool bIdleFace = true;
	/** ZeroMQ CURVE keys (Z85), only when the server is not on loopback. */
	FString CurveServerKey;
	FString CurvePublicKey;
	FString CurveSecretKey;
};

/** An event for the game thread (copied out of the core's memory on the receive thread). */
struct FA2LLMGameEvent
{
	int32 Type = A2LLM_EVENT_NONE; // a2llm_event_type
	uint32 TurnId = 0;
	FString Text;
	int32 Code = 0;
	int32 Status = 0; // a2llm_turn_status
	float TtftS = -1.f;
	float TtfaS = -1.f;
	float Rtf = -1.f;
	uint64 AudioSamples = 0;
	// version 2: SPEECH_STARTED / SPEECH_ENDED / BARGE_IN (mic stream offsets), CONFIG_ACK (Code = kind, Flags)
	uint64 StartSample = 0;
	uint64 EndSample = 0;
	uint64 DetectedSample = 0;
	int32 Reason = 0;
	uint32 Flags = 0;
};

class A2LLMBRIDGE_API FA2LLMConnection : public FRunnable
{
public:
	/** Connects (returns at once; a CONNECTED event follows the server's Welcome). Null + OutError on failure. */
	static TSharedPtr<FA2LLMConnection, ESPMode::ThreadSafe> Create(const FA2LLMConnectionSettings& Settings,
		FString& OutError);
	virtual ~FA2LLMConnection() override;

	a2llm_client* Handle() const { return Client; }

	/** Game thread: next event from the receive thread. */
	bool DequeueEvent(FA2LLMGameEvent& Out) { return Events.Dequeue(Out); }

	/** Audio render thread: n samples of 24 kHz answer audio (silence where none); records the A/V clock. */
	void ReadAudio(float* Out, int32 NumSamples);

	/**
	 * Game thread: the answer sample sounding now. The last ReadAudio moved the core's playhead to P by `Played`
	 * samples; those started sounding OutputLatencySeconds after the read, so now = P - Played + (elapsed - latency)
	 * * 24000, capped at P. A2LLM_PLAYHEAD_CURRENT before the first audio callback.
	 */
	uint64 EstimatePlayhead(double OutputLatencySeconds) const;

	/** Curve names of a granted layout, from the Welcome's static data (empty if not granted). Any thread. */
	TArray<FName> CurveNames(int32 LayoutId) const;

	/** Thread-safe sends (see a2llm_client.h). Return the turn id or a negative a2llm_status. */
	int32 SendAudio(const float* Samples, int32 Num, int32 SampleRate, bool bEndOfUtterance);
	int32 Cancel();

	/** Version 2 (PROTOCOL.md 10), thread-safe. Return A2LLM_OK / a turn id, or a negative a2llm_status. */
	int32 SetCharacter(const A2LLM::FCharacterUtf8& Character);
	int32 SetContext(const FString& Text);
	int32 SetEmotion(const FString& Emotion, float Intensity, bool bNextTurnOnly);
	int32 SendText(const FString& Text);
	/** Hands-free: a piece of the continuous microphone stream (mono float32 in [-1, 1]). */
	int32 SendMic(const float* Samples, int32 Num, int32 SampleRate, bool bEndOfStream);
	/** The server's voice or emotion names (empty before its ServerInfo). Any thread. */
	TArray<FString> ServerNames(bool bVoices) const;

	// FRunnable (the receive thread)
	virtual uint32 Run() override;
	virtual void Stop() override { bStopping = true; }

private:
	FA2LLMConnection() = default;

	a2llm_client* Client = nullptr;
	TArray<TArray<ANSICHAR>> KeepAlive;
	FRunnableThread* Thread = nullptr;
	FThreadSafeBool bStopping;
	TQueue<FA2LLMGameEvent, EQueueMode::Spsc> Events;

	mutable FCriticalSection ClockLock;
	uint64 ClockPlayhead = 0;
	int32 ClockPlayed = 0;
	double ClockTime = 0.0;
	bool bClockValid = false;
};

using FA2LLMConnectionPtr = TSharedPtr<FA2LLMConnection, ESPMode::ThreadSafe>;
using FA2LLMConnectionWeakPtr = TWeakPtr<FA2LLMConnection, ESPMode::ThreadSafe>;
