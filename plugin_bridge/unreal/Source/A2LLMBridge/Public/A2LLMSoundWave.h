// Copyright a2llm. The answer's speech as a procedural sound wave: the audio render thread pulls float32 24 kHz mono
// straight from the native core's audio ring (a2llm_client_read_audio), which also advances the playhead that the
// face is sampled at; Unreal's mixer resamples 24 kHz to the device rate (the unit conversion at this boundary).
#pragma once

#include "CoreMinimal.h"
#include "A2LLMConnection.h"
#include "HAL/CriticalSection.h"
#include "Sound/SoundWaveProcedural.h"
#include "A2LLMSoundWave.generated.h"

UCLASS()
class A2LLMBRIDGE_API UA2LLMSoundWave : public USoundWaveProcedural
{
	GENERATED_BODY()

public:
	UA2LLMSoundWave(const FObjectInitializer& ObjectInitializer);

	/** Game thread: the connection to pull from (a weak pointer: the component owns the connection). Setting null
	 *  waits until no audio-thread pull holds the connection, so the component releases it on the game thread. */
	void SetConnection(const FA2LLMConnectionWeakPtr& InConnection);

	//~ USoundWaveProcedural
	virtual int32 OnGeneratePCMAudio(TArray<uint8>& OutAudio, int32 NumSamples) override;
	virtual Audio::EAudioMixerStreamDataFormat::Type GetGeneratedPCMDataFormat() const override;

private:
	FCriticalSection ConnectionLock;
	FA2LLMConnectionWeakPtr Connection;
};
