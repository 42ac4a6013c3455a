// Copyright a2llm.
#include "A2LLMSoundWave.h"

#include "Misc/ScopeLock.h"

UA2LLMSoundWave::UA2LLMSoundWave(const FObjectInitializer& ObjectInitializer)
	: Super(ObjectInitializer)
{
	SetSampleRate(24000); // the protocol's answer rate
	NumChannels = 1;
	SampleByteSize = sizeof(float);
	Duration = INDEFINITELY_LOOPING_DURATION;
	bLooping = false;
	bProcedural = true;
	SoundGroup = SOUNDGROUP_Voice;
}

void UA2LLMSoundWave::SetConnection(const FA2LLMConnectionWeakPtr& InConnection)
{
	FScopeLock Lock(&ConnectionLock);
	Connection = InConnection;
}

Audio::EAudioMixerStreamDataFormat::Type UA2LLMSoundWave::GetGeneratedPCMDataFormat() const
{
	return Audio::EAudioMixerStreamDataFormat::Float;
}

int32 UA2LLMSoundWave::OnGeneratePCMAudio(TArray<uint8>& OutAudio, int32 NumSamples)
{
	// Audio render thread. Always produce NumSamples (silence when idle or pre-buffering) so the source never starves
	// and stops; the core's playhead only moves for real answer samples.
	OutAudio.SetNumUninitialized(NumSamples * sizeof(float));
	float* Out = reinterpret_cast<float*>(OutAudio.GetData());
	FA2LLMConnectionPtr Conn;
	{
		FScopeLock Lock(&ConnectionLock);
		Conn = Connection.Pin();
	}
	if (Conn.IsValid())
	{
		Conn->ReadAudio(Out, NumSamples);
	}
	else
	{
		FMemory::Memzero(Out, NumSamples * sizeof(float));
	}
	return NumSamples;
}
