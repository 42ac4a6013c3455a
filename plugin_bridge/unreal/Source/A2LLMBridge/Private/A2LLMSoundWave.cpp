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
	// The pin lives only inside the lock: SetConnection(nullptr) (game thread, before the component drops its own
	// reference) waits for a pull in flight, so the last reference, whose destructor joins the core's threads, is
	// always released on the game thread, never here.
	FScopeLock Lock(&ConnectionLock);
	if (const FA2LLMConnectionPtr Conn = Connection.Pin())
	{
		Conn->ReadAudio(Out, NumSamples); // a few microseconds: never waits on the network
	}
	else
	{
		FMemory::Memzero(Out, NumSamples * sizeof(float));
	}
	return NumSamples;
}
