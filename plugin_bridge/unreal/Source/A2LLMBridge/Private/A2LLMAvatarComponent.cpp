// Copyright a2llm.
#include "A2LLMAvatarComponent.h"

#include "A2LLMBridgeModule.h"
#include "A2LLMCurveNames.h"
#include "A2LLMLiveLinkSource.h"
#include "A2LLMSoundWave.h"
#include "Components/AudioComponent.h"
#include "Components/SceneComponent.h"
#include "GameFramework/Actor.h"
#include "Misc/ScopeLock.h"

UA2LLMAvatarComponent::UA2LLMAvatarComponent()
{
	PrimaryComponentTick.bCanEverTick = true;
	PrimaryComponentTick.TickGroup = TG_PrePhysics; // before animation evaluates this frame's Live Link data
}

void UA2LLMAvatarComponent::BeginPlay()
{
	Super::BeginPlay();
	if (HeadComponent != nullptr)
	{
		HeadRest = HeadComponent->GetRelativeRotation();
	}
	if (bConnectOnBeginPlay)
	{
		Connect();
	}
}

void UA2LLMAvatarComponent::EndPlay(const EEndPlayReason::Type EndPlayReason)
{
	Disconnect();
	Super::EndPlay(EndPlayReason);
}

bool UA2LLMAvatarComponent::Connect()
{
	Disconnect();
	FA2LLMConnectionSettings Settings;
	Settings.Endpoint = ServerEndpoint;
	Settings.JitterTargetMs = static_cast<uint32>(FMath::Max(JitterTargetMs, 0));
	Settings.CurveServerKey = CurveServerKey;
	Settings.bIdleFace = bIdleFace;
	FString Error;
	Connection = FA2LLMConnection::Create(Settings, Error);
	if (!Connection.IsValid())
	{
		UE_LOG(LogA2LLM, Error, TEXT("%s"), *Error);
		OnError.Broadcast(-1, Error);
		return false;
	}
	// stored by the core and sent after the Welcome (and again after every reconnect)
	ApplyCharacter();
	if (!GameContext.IsEmpty())
	{
		SetGameContext(GameContext);
	}

	LiveLinkSource = FA2LLMLiveLinkSource::AddToLiveLink(ServerEndpoint);
	if (!LiveLinkSource.IsValid())
	{
		UE_LOG(LogA2LLM, Warning, TEXT("Live Link is not available: enable the Live Link plugin"));
	}

	SoundWave = NewObject<UA2LLMSoundWave>(this);
	SoundWave->SetConnection(Connection);
	AActor* Owner = GetOwner();
	AudioComponent = NewObject<UAudioComponent>(Owner != nullptr ? static_cast<UObject*>(Owner) : this);
	AudioComponent->bAutoActivate = false;
	AudioComponent->bAllowSpatialization = true;
	AudioComponent->SetSound(SoundWave);
	AudioComponent->RegisterComponent();
	if (Owner != nullptr && Owner->GetRootComponent() != nullptr)
	{
		AudioComponent->AttachToComponent(Owner->GetRootComponent(), FAttachmentTransformRules::KeepRelativeTransform);
	}
	AudioComponent->Play(); // plays silence until an answer arrives; the wave never ends
	return true;
}

void UA2LLMAvatarComponent::Disconnect()
{
	if (bTalking)
	{
		EndTalking();
	}
	if (bStreaming)
	{
		const bool bWanted = bHandsFree;
		StopHandsFree();
		bHandsFree = bWanted; // reconnecting starts it again
	}
	if (AudioComponent != nullptr)
	{
		AudioComponent->Stop();
		AudioComponent->DestroyComponent();
		AudioComponent = nullptr;
	}
	if (SoundWave != nullptr)
	{
		SoundWave->SetConnection(nullptr);
		SoundWave = nullptr;
	}
	if (LiveLinkSource.IsValid())
	{
		LiveLinkSource->RemoveFromLiveLink();
		LiveLinkSource.Reset();
	}
	Connection.Reset(); // joins the receive thread, sends Bye, frees the core's client
	CurveNames.Reset();
	Curves.Reset();
	bAnswerPending = false;
}

bool UA2LLMAvatarComponent::IsConnected() const
{
	return Connection.IsValid() && A2LLM::Api().a2llm_client_state(Connection->Handle()) == A2LLM_STATE_READY;
}

bool UA2LLMAvatarComponent::BeginTalking()
{
	if (!Connection.IsValid() || bTalking)
	{
		return false;
	}
	if (bStreaming)
	{
		UE_LOG(LogA2LLM, Warning, TEXT("hands-free is on: push-to-talk is off until StopHandsFree"));
		return false;
	}
	uint32 PlayingTurn = 0;
	A2LLM::Api().a2llm_client_playback_position(Connection->Handle(), &PlayingTurn);
	if (PlayingTurn != 0 || bAnswerPending)
	{
		CancelAnswer(); // barge-in
	}
	if (!OpenMicrophone())
	{
		return false;
	}
	FScopeLock Lock(&MicLock);
	bTalking = true;
	return true;
}

bool UA2LLMAvatarComponent::OpenMicrophone()
{
	Capture = MakeUnique<Audio::FAudioCapture>();
	Audio::FAudioCaptureDeviceParams Params; // default device, float32
	Audio::FOnAudioCaptureFunction OnCapture = [this](const void* InAudio, int32 NumFrames, int32 NumChannels,
		int32 SampleRate, double StreamTime, bool bOverflow)
	{
		OnMicrophoneAudio(static_cast<const float*>(InAudio), NumFrames, NumChannels, SampleRate);
	};
	if (!Capture->OpenAudioCaptureStream(Params, MoveTemp(OnCapture), 1024) || !Capture->StartStream())
	{
		UE_LOG(LogA2LLM, Error, TEXT("could not open the default microphone"));
		Capture.Reset();
		return false;
	}
	return true;
}

void UA2LLMAvatarComponent::CloseMicrophone()
{
	if (Capture.IsValid())
	{
		Capture->StopStream();
		Capture->CloseStream();
		Capture.Reset();
	}
}

void UA2LLMAvatarComponent::OnMicrophoneAudio(const float* Audio, int32 NumFrames, int32 NumChannels, int32 SampleRate)
{
	// Capture thread: mix to mono and send at the device rate (the server resamples to 16 kHz, polyphase).
	FScopeLock Lock(&MicLock);
	if ((!bTalking && !bStreaming) || !Connection.IsValid() || NumFrames <= 0 || NumChannels <= 0)
	{
		return;
	}
	MicMono.SetNumUninitialized(NumFrames);
	for (int32 F = 0; F < NumFrames; ++F)
	{
		float Sum = 0.f;
		for (int32 C = 0; C < NumChannels; ++C)
		{
			Sum += Audio[F * NumChannels + C];
		}
		MicMono[F] = FMath::Clamp(Sum / NumChannels, -1.f, 1.f);
	}
	if (bStreaming)
	{
		// hands-free: the continuous stream at the device rate (one of the server's mic rates, checked at start)
		const int32 R = Connection->SendMic(MicMono.GetData(), NumFrames, SampleRate, false);
		if (R < 0 && R != A2LLM_ERR_NOT_CONNECTED)
		{
			UE_LOG(LogA2LLM, Warning, TEXT("hands-free microphone not sent: %hs"), A2LLM::Api().a2llm_last_error());
		}
		return;
	}
	const int32 Turn = Connection->SendAudio(MicMono.GetData(), NumFrames, SampleRate, false);
	if (Turn > 0)
	{
		CurrentTurn = static_cast<uint32>(Turn);
	}
}

void UA2LLMAvatarComponent::EndTalking()
{
	{
		FScopeLock Lock(&MicLock); // no microphone send can follow the end of the utterance
		if (!bTalking)
		{
			return;
		}
		bTalking = false;
		if (Connection.IsValid())
		{
			const int32 Turn = Connection->SendAudio(nullptr, 0, 16000, true);
			if (Turn > 0)
			{
				CurrentTurn = static_cast<uint32>(Turn);
				bAnswerPending = true;
			}
			else if (Turn == A2LLM_ERR_REFUSED)
			{
				// The server already ended this utterance (AUDIO_TOO_LONG): the core closed it, nothing is re-sent.
				UE_LOG(LogA2LLM, Log, TEXT("utterance %u was ended by the server: %hs"), CurrentTurn,
					A2LLM::Api().a2llm_last_error());
			}
			else
			{
				UE_LOG(LogA2LLM, Warning, TEXT("end of utterance not sent: %hs"), A2LLM::Api().a2llm_last_error());
			}
		}
	}
	CloseMicrophone();
}

void UA2LLMAvatarComponent::CancelAnswer()
{
	if (Connection.IsValid())
	{
		Connection->Cancel();
	}
	bAnswerPending = false;
}

A2LLM::FCharacterUtf8 UA2LLMAvatarComponent::CharacterUtf8() const
{
	A2LLM::FCharacterUtf8 C;
	C.Persona = std::string(TCHAR_TO_UTF8(*Persona));
	C.Voice = std::string(TCHAR_TO_UTF8(*Voice));
	C.Emotion = std::string(TCHAR_TO_UTF8(*Emotion));
	C.Intensity = EmotionIntensity;
	C.bEmotionInPrompt = bEmotionInPrompt;
	C.bEmotionOnFace = bEmotionOnFace;
	return C;
}

bool UA2LLMAvatarComponent::ApplyCharacter()
{
	if (!Connection.IsValid())
	{
		return false;
	}
	const int32 R = Connection->SetCharacter(CharacterUtf8());
	if (R != A2LLM_OK)
	{
		const FString Why = UTF8_TO_TCHAR(A2LLM::Api().a2llm_last_error());
		UE_LOG(LogA2LLM, Warning, TEXT("character not applied: %s"), *Why);
		OnError.Broadcast(R, Why);
	}
	return R == A2LLM_OK;
}

bool UA2LLMAvatarComponent::SetGameContext(const FString& Text)
{
	GameContext = Text;
	if (!Connection.IsValid())
	{
		return false;
	}
	const int32 R = Connection->SetContext(Text);
	if (R != A2LLM_OK)
	{
		OnError.Broadcast(R, UTF8_TO_TCHAR(A2LLM::Api().a2llm_last_error()));
	}
	return R == A2LLM_OK;
}

bool UA2LLMAvatarComponent::SetEmotion(const FString& EmotionName, float Intensity, bool bNextTurnOnly)
{
	if (!Connection.IsValid())
	{
		return false;
	}
	const int32 R = Connection->SetEmotion(EmotionName, Intensity, bNextTurnOnly);
	if (R != A2LLM_OK)
	{
		OnError.Broadcast(R, UTF8_TO_TCHAR(A2LLM::Api().a2llm_last_error()));
		return false;
	}
	if (!bNextTurnOnly)
	{
		Emotion = EmotionName;
		EmotionIntensity = Intensity;
	}
	return true;
}

int32 UA2LLMAvatarComponent::SendText(const FString& Text)
{
	if (!Connection.IsValid())
	{
		return A2LLM_ERR_NOT_CONNECTED;
	}
	uint32 PlayingTurn = 0;
	A2LLM::Api().a2llm_client_playback_position(Connection->Handle(), &PlayingTurn);
	if (PlayingTurn != 0 || bAnswerPending)
	{
		CancelAnswer(); // barge-in
	}
	const int32 Turn = Connection->SendText(Text);
	if (Turn > 0)
	{
		CurrentTurn = static_cast<uint32>(Turn);
		bAnswerPending = true;
	}
	else
	{
		OnError.Broadcast(Turn, UTF8_TO_TCHAR(A2LLM::Api().a2llm_last_error()));
	}
	return Turn;
}

bool UA2LLMAvatarComponent::StartHandsFree()
{
	bHandsFree = true;
	if (!IsConnected() || bStreaming)
	{
		return bStreaming; // the CONNECTED event starts it
	}
	if (bTalking)
	{
		EndTalking();
	}
	if (A2LLM::Api().a2llm_client_session_version(Connection->Handle()) < 2)
	{
		UE_LOG(LogA2LLM, Warning, TEXT("hands-free needs protocol version 2; this server speaks version 1"));
		return false;
	}
	if (!OpenMicrophone())
	{
		return false;
	}
	const int32 DeviceRate = Capture->GetSampleRate();
	if (A2LLM::AcceptedMicRate(A2LLM::Api(), Connection->Handle(), static_cast<uint32>(DeviceRate)) == 0)
	{
		UE_LOG(LogA2LLM, Error, TEXT("the microphone runs at %d Hz, which the server does not take for hands-free "
			"(16000, 32000 or 48000): set the device's rate"), DeviceRate);
		CloseMicrophone();
		return false;
	}
	FScopeLock Lock(&MicLock);
	bStreaming = true;
	return true;
}

void UA2LLMAvatarComponent::StopHandsFree()
{
	bHandsFree = false;
	{
		FScopeLock Lock(&MicLock);
		if (!bStreaming)
		{
			return;
		}
		bStreaming = false;
		if (Connection.IsValid())
		{
			Connection->SendMic(nullptr, 0, 16000, true); // END_OF_STREAM: an utterance in progress ends
		}
	}
	CloseMicrophone();
}

TArray<FString> UA2LLMAvatarComponent::GetVoiceNames() const
{
	return Connection.IsValid() ? Connection->ServerNames(true) : TArray<FString>();
}

TArray<FString> UA2LLMAvatarComponent::GetEmotionNames() const
{
	return Connection.IsValid() ? Connection->ServerNames(false) : TArray<FString>();
}

void UA2LLMAvatarComponent::TickComponent(float DeltaTime, ELevelTick TickType,
	FActorComponentTickFunction* ThisTickFunction)
{
	Super::TickComponent(DeltaTime, TickType, ThisTickFunction);
	if (!Connection.IsValid())
	{
		return;
	}
	FA2LLMGameEvent Event;
	while (Connection.IsValid() && Connection->DequeueEvent(Event))
	{
		HandleEvent(Event);
	}
	PublishFace();
}

void UA2LLMAvatarComponent::HandleEvent(const FA2LLMGameEvent& Event)
{
	switch (Event.Type)
	{
	case A2LLM_EVENT_CONNECTED:
	{
		// Static data, once per (re)connection: the Welcome's Live Link curve names, in the Live Link Face order.
		CurveNames = Connection->CurveNames(A2LLM_LAYOUT_LIVELINK61);
		if (CurveNames != A2LLM::LiveLinkCurveNames())
		{
			UE_LOG(LogA2LLM, Warning, TEXT("server curve names differ from the Live Link Face set (%d names)"),
				CurveNames.Num());
		}
		Curves.SetNumZeroed(CurveNames.Num());
		if (LiveLinkSource.IsValid())
		{
			LiveLinkSource->PushStaticData(SubjectName, CurveNames);
			LiveLinkSource->SetStatus(FText::FromString(TEXT("Active")));
		}
		OnConnected.Broadcast();
		break;
	}
	case A2LLM_EVENT_SERVER_INFO:
		if (bHandsFree && !bStreaming)
		{
			StartHandsFree(); // the server's mic rates are known now
		}
		break;
	case A2LLM_EVENT_SPEECH_STARTED:
		OnSpeechStarted.Broadcast(static_cast<int32>(Event.TurnId));
		break;
	case A2LLM_EVENT_SPEECH_ENDED: // the hands-free turn starts; its answer follows
		CurrentTurn = Event.TurnId;
		bAnswerPending = true;
		OnSpeechEnded.Broadcast(static_cast<int32>(Event.TurnId));
		break;
	case A2LLM_EVENT_BARGE_IN: // the core already faded the answer out
		if (Event.TurnId == CurrentTurn)
		{
			bAnswerPending = false;
		}
		OnBargeIn.Broadcast(static_cast<int32>(Event.TurnId));
		break;
	case A2LLM_EVENT_CONFIG_ACK:
		OnConfigApplied.Broadcast(Event.Code, (Event.Flags & A2LLM_ACK_CONVERSATION_RESET) != 0);
		break;
	case A2LLM_EVENT_TEXT_DELTA:
		OnText.Broadcast(Event.Text);
		break;
	case A2LLM_EVENT_TURN_END:
		if (Event.TurnId == CurrentTurn)
		{
			bAnswerPending = false;
		}
		OnTurnEnd.Broadcast(static_cast<int32>(Event.TurnId), Event.Status);
		break;
	case A2LLM_EVENT_ERROR:
		UE_LOG(LogA2LLM, Warning, TEXT("server error %d: %s"), Event.Code, *Event.Text);
		if (Event.Code == 28 /* AUDIO_TOO_LONG */ && Event.TurnId == CurrentTurn && bTalking)
		{
			EndTalking(); // final: the microphone stops; the rest of the utterance is not sent (the core refuses it)
		}
		OnError.Broadcast(Event.Code, Event.Text);
		break;
	case A2LLM_EVENT_DISCONNECTED:
		if (bStreaming)
		{
			StopHandsFree(); // the stream restarts at sample 0 after the next ServerInfo
			bHandsFree = true;
		}
		if (LiveLinkSource.IsValid())
		{
			LiveLinkSource->SetStatus(FText::FromString(TEXT("Reconnecting")));
		}
		break;
	default:
		break;
	}
}

void UA2LLMAvatarComponent::PublishFace()
{
	if (Curves.Num() == 0)
	{
		return;
	}
	const uint64 At = Connection->EstimatePlayhead(OutputLatencyMs / 1000.0);
	int32 Layout = A2LLM_LAYOUT_LIVELINK61;
	int32 Flags = 0;
	const int32 N = A2LLM::Api().a2llm_client_face_frame_at(Connection->Handle(), At, Curves.GetData(), Curves.Num(), &Layout, &Flags);
	if (N != Curves.Num())
	{
		return; // no frame yet (0) or an error
	}
	if (LiveLinkSource.IsValid())
	{
		LiveLinkSource->PushFrame(SubjectName, Curves.GetData(), N);
	}
	if (HeadComponent != nullptr && N > A2LLM::HeadRollIndex)
	{
		const FRotator Head = GetHeadRotation();
		HeadComponent->SetRelativeRotation(FQuat(HeadRest) * FQuat(Head));
	}
}

FRotator UA2LLMAvatarComponent::GetHeadRotation() const
{
	if (Curves.Num() <= A2LLM::HeadRollIndex)
	{
		return FRotator::ZeroRotator;
	}
	return A2LLM::HeadRotatorFromCurves(Curves[A2LLM::HeadYawIndex] * HeadSigns.X,
		Curves[A2LLM::HeadPitchIndex] * HeadSigns.Y, Curves[A2LLM::HeadRollIndex] * HeadSigns.Z);
}

float UA2LLMAvatarComponent::GetCurveValue(FName Curve) const
{
	const int32 Index = CurveNames.IndexOfByKey(Curve);
	return Index != INDEX_NONE && Index < Curves.Num() ? Curves[Index] : 0.f;
}
