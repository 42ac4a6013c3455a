// Copyright a2llm.
#include "A2LLMConnection.h"

#include "A2LLMBridgeModule.h"
#include "HAL/PlatformProcess.h"
#include "HAL/PlatformTime.h"
#include "HAL/RunnableThread.h"
#include "Misc/ScopeLock.h"

namespace
{
	/** UTF-8 copy that outlives the call (FTCHARToUTF8 is a temporary). */
	TArray<ANSICHAR> Utf8(const FString& S)
	{
		FTCHARToUTF8 Conv(*S);
		TArray<ANSICHAR> Out;
		Out.Append(Conv.Get(), Conv.Length());
		Out.Add('\0');
		return Out;
	}
}

FA2LLMConnectionPtr FA2LLMConnection::Create(const FA2LLMConnectionSettings& Settings, FString& OutError)
{
	if (!FA2LLMBridgeModule::IsNativeCoreAvailable())
	{
		OutError = TEXT("the a2llm native core is not loaded (see the log and the plugin README)");
		return nullptr;
	}
	a2llm_client_options Opts;
	A2LLM::Api().a2llm_client_options_init(&Opts);
	Opts.capabilities = A2LLM_CAP_TEXT | A2LLM_CAP_AUDIO | A2LLM_CAP_FACE | (Settings.bIdleFace ? A2LLM_CAP_IDLE_FACE : 0u);
	Opts.layouts[0] = A2LLM_LAYOUT_LIVELINK61; // the Live Link Face curve set, head included
	Opts.n_layouts = 1;
	Opts.jitter_target_ms = Settings.JitterTargetMs;
	Opts.event_queue_capacity = 0; // no AUDIO/FACE notifications: their data is read from the ring / jitter buffer
	const TArray<ANSICHAR> Name = Utf8(Settings.ClientName);
	const TArray<ANSICHAR> ServerKey = Utf8(Settings.CurveServerKey);
	const TArray<ANSICHAR> PublicKey = Utf8(Settings.CurvePublicKey);
	const TArray<ANSICHAR> SecretKey = Utf8(Settings.CurveSecretKey);
	Opts.client_name = Name.GetData();

	FA2LLMConnectionPtr Conn(new FA2LLMConnection());
	Conn->KeepAlive = {ServerKey, PublicKey, SecretKey}; // the core may read the CURVE keys after create returns
	Opts.curve_server_key = Settings.CurveServerKey.IsEmpty() ? nullptr : Conn->KeepAlive[0].GetData();
	Opts.curve_public_key = Settings.CurvePublicKey.IsEmpty() ? nullptr : Conn->KeepAlive[1].GetData();
	Opts.curve_secret_key = Settings.CurveSecretKey.IsEmpty() ? nullptr : Conn->KeepAlive[2].GetData();
	Conn->Client = A2LLM::Api().a2llm_client_create(Utf8(Settings.Endpoint).GetData(), &Opts);
	if (Conn->Client == nullptr)
	{
		OutError = FString::Printf(TEXT("cannot connect to %s: %s"), *Settings.Endpoint, UTF8_TO_TCHAR(A2LLM::Api().a2llm_last_error()));
		return nullptr;
	}
	Conn->Thread = FRunnableThread::Create(Conn.Get(), TEXT("A2LLMReceive"), 0, TPri_AboveNormal);
	return Conn;
}

FA2LLMConnection::~FA2LLMConnection()
{
	// Joins two threads and sends Bye: never on the audio render or capture thread (the component and the sound
	// wave make sure the last reference is dropped on the game thread).
	ensureMsgf(IsInGameThread() || IsEngineExitRequested(), TEXT("FA2LLMConnection released off the game thread"));
	if (Thread != nullptr)
	{
		Thread->Kill(true); // Stop() then wait for Run() to return
		delete Thread;
		Thread = nullptr;
	}
	if (Client != nullptr && A2LLM::Api().IsLoaded())
	{
		A2LLM::Api().a2llm_client_destroy(Client); // sends Bye, joins the core's I/O thread
	}
	Client = nullptr;
}

uint32 FA2LLMConnection::Run()
{
	a2llm_event Ev;
	while (!bStopping)
	{
		const int32 R = A2LLM::Api().a2llm_client_poll(Client, &Ev);
		if (R <= 0)
		{
			FPlatformProcess::Sleep(0.002f); // poll never blocks; 2 ms keeps text latency low at ~0 CPU
			continue;
		}
		if (Ev.type == A2LLM_EVENT_AUDIO || Ev.type == A2LLM_EVENT_FACE)
		{
			continue; // data is already in the audio ring / face jitter buffer
		}
		FA2LLMGameEvent Out;
		Out.Type = Ev.type;
		Out.TurnId = Ev.turn_id;
		if (Ev.text != nullptr)
		{
			Out.Text = FString(UTF8_TO_TCHAR(Ev.text)); // NUL-terminated UTF-8
		}
		Out.Code = Ev.code;
		Out.Status = Ev.status;
		Out.TtftS = Ev.ttft_s;
		Out.TtfaS = Ev.ttfa_s;
		Out.Rtf = Ev.rtf;
		Out.AudioSamples = Ev.audio_samples;
		Out.StartSample = Ev.start_sample;
		Out.EndSample = Ev.end_sample;
		Out.DetectedSample = Ev.detected_sample;
		Out.Reason = Ev.reason;
		Out.Flags = Ev.flags;
		Events.Enqueue(MoveTemp(Out));
	}
	return 0;
}

void FA2LLMConnection::ReadAudio(float* Out, int32 NumSamples)
{
	const int32 Played = A2LLM::Api().a2llm_client_read_audio(Client, Out, NumSamples);
	uint32 Turn = 0;
	const uint64 Playhead = A2LLM::Api().a2llm_client_playback_position(Client, &Turn);
	FScopeLock Lock(&ClockLock);
	ClockPlayhead = Playhead;
	ClockPlayed = static_cast<int32>(FMath::Min<uint64>(FMath::Max(Played, 0), Playhead));
	ClockTime = FPlatformTime::Seconds();
	bClockValid = true;
}

uint64 FA2LLMConnection::EstimatePlayhead(double OutputLatencySeconds) const
{
	uint64 Playhead;
	uint64 Start;
	double Time;
	{
		FScopeLock Lock(&ClockLock);
		if (!bClockValid)
		{
			return A2LLM_PLAYHEAD_CURRENT;
		}
		Playhead = ClockPlayhead;
		Start = ClockPlayhead - ClockPlayed;
		Time = ClockTime;
	}
	const double Elapsed = FPlatformTime::Seconds() - Time;
	const double Est = static_cast<double>(Start) + (Elapsed - OutputLatencySeconds) * 24000.0;
	return static_cast<uint64>(FMath::Clamp(Est, 0.0, static_cast<double>(Playhead)));
}

TArray<FName> FA2LLMConnection::CurveNames(int32 LayoutId) const
{
	TArray<FName> Names;
	const int32 N = A2LLM::Api().a2llm_client_curve_count(Client, LayoutId);
	for (int32 I = 0; I < N; ++I)
	{
		const char* Name = A2LLM::Api().a2llm_client_curve_name(Client, LayoutId, I);
		Names.Add(Name != nullptr ? FName(UTF8_TO_TCHAR(Name)) : NAME_None);
	}
	return Names;
}

int32 FA2LLMConnection::SendAudio(const float* Samples, int32 Num, int32 SampleRate, bool bEndOfUtterance)
{
	return A2LLM::Api().a2llm_client_send_audio_f32(Client, Samples, static_cast<uint32>(FMath::Max(Num, 0)),
		static_cast<uint32>(SampleRate), bEndOfUtterance ? 1 : 0);
}

int32 FA2LLMConnection::Cancel()
{
	return A2LLM::Api().a2llm_client_cancel(Client);
}

int32 FA2LLMConnection::SetCharacter(const A2LLM::FCharacterUtf8& Character)
{
	return A2LLM::ApplyCharacter(A2LLM::Api(), Client, Character);
}

int32 FA2LLMConnection::SetContext(const FString& Text)
{
	return A2LLM::Api().a2llm_client_set_context(Client, Utf8(Text).GetData());
}

int32 FA2LLMConnection::SetEmotion(const FString& Emotion, float Intensity, bool bNextTurnOnly)
{
	return A2LLM::Api().a2llm_client_set_emotion(Client, Utf8(Emotion).GetData(), Intensity,
		bNextTurnOnly ? A2LLM_SCOPE_NEXT_TURN : A2LLM_SCOPE_SESSION);
}

int32 FA2LLMConnection::SendText(const FString& Text)
{
	return A2LLM::Api().a2llm_client_send_text(Client, Utf8(Text).GetData());
}

int32 FA2LLMConnection::SendMic(const float* Samples, int32 Num, int32 SampleRate, bool bEndOfStream)
{
	return A2LLM::Api().a2llm_client_send_mic_f32(Client, Samples, static_cast<uint32>(FMath::Max(Num, 0)),
		static_cast<uint32>(SampleRate), bEndOfStream ? 1 : 0);
}

TArray<FString> FA2LLMConnection::ServerNames(bool bVoices) const
{
	TArray<FString> Names;
	A2LLM::ForEachServerName(A2LLM::Api(), Client, bVoices, [&Names](const char* Name) { Names.Add(FString(UTF8_TO_TCHAR(Name))); });
	return Names;
}
