// Copyright a2llm. Add to the MetaHuman (or any) actor: connects to the a2llm bridge server, push-to-talk microphone
// capture (AudioCapture module), plays the answer through a procedural sound wave and publishes the face as the Live
// Link subject `SubjectName` (Live Link Face curve set), sampled every tick at the audio playhead.
#pragma once

#include "CoreMinimal.h"
#include "A2LLMConnection.h"
#include "AudioCaptureCore.h" // complete Audio::FAudioCapture: TUniquePtr's deleter runs in UHT-generated code
#include "Components/ActorComponent.h"
#include "HAL/CriticalSection.h"
#include "A2LLMAvatarComponent.generated.h"

class FA2LLMLiveLinkSource;
class UA2LLMSoundWave;
class UAudioComponent;
class USceneComponent;

DECLARE_DYNAMIC_MULTICAST_DELEGATE(FA2LLMConnectedDelegate);
DECLARE_DYNAMIC_MULTICAST_DELEGATE_OneParam(FA2LLMTextDelegate, const FString&, Text);
DECLARE_DYNAMIC_MULTICAST_DELEGATE_TwoParams(FA2LLMTurnDelegate, int32, TurnId, int32, Status);
DECLARE_DYNAMIC_MULTICAST_DELEGATE_TwoParams(FA2LLMErrorDelegate, int32, Code, const FString&, Message);
DECLARE_DYNAMIC_MULTICAST_DELEGATE_OneParam(FA2LLMSpeechDelegate, int32, TurnId);
DECLARE_DYNAMIC_MULTICAST_DELEGATE_TwoParams(FA2LLMConfigDelegate, int32, AckedKind, bool, bConversationReset);

UCLASS(ClassGroup = (A2LLM), meta = (BlueprintSpawnableComponent))
class A2LLMBRIDGE_API UA2LLMAvatarComponent : public UActorComponent
{
	GENERATED_BODY()

public:
	UA2LLMAvatarComponent();

	/** ZeroMQ endpoint of `python -m plugin_bridge.serve`. */
	UPROPERTY(EditAnywhere, BlueprintReadWrite, Category = "A2LLM")
	FString ServerEndpoint = TEXT("tcp://127.0.0.1:5555");

	/** Live Link subject name; put it in the face AnimBP's "LLink Face Subj". */
	UPROPERTY(EditAnywhere, BlueprintReadWrite, Category = "A2LLM")
	FName SubjectName = TEXT("A2LLM");

	UPROPERTY(EditAnywhere, BlueprintReadWrite, Category = "A2LLM")
	bool bConnectOnBeginPlay = true;

	/** Audio buffered before an answer starts (and after an underrun). */
	UPROPERTY(EditAnywhere, BlueprintReadWrite, Category = "A2LLM", meta = (ClampMin = "0", ClampMax = "2000"))
	int32 JitterTargetMs = 100;

	/** Time from the sound wave handing samples to the mixer until they sound; tune if lips lead or lag. */
	UPROPERTY(EditAnywhere, BlueprintReadWrite, Category = "A2LLM", meta = (ClampMin = "0", ClampMax = "1000"))
	int32 OutputLatencyMs = 50;

	/** Optional: a scene component rotated by HeadYaw/HeadPitch/HeadRoll (not needed for a MetaHuman face AnimBP). */
	UPROPERTY(EditAnywhere, BlueprintReadWrite, Category = "A2LLM")
	TObjectPtr<USceneComponent> HeadComponent;

	/** Multiplies (yaw, pitch, roll) before they are applied to HeadComponent; -1 flips an axis for odd rigs. */
	UPROPERTY(EditAnywhere, BlueprintReadWrite, Category = "A2LLM")
	FVector HeadSigns = FVector(1.0, 1.0, 1.0);

	UPROPERTY(EditAnywhere, BlueprintReadWrite, Category = "A2LLM")
	FString CurveServerKey;

	// --- the character (protocol version 2): sent at Connect, kept by the core across reconnects ---------------
	/** The character's system prompt. A changed persona starts a new conversation. Empty = the server's default. */
	UPROPERTY(EditAnywhere, BlueprintReadWrite, Category = "A2LLM|Character", meta = (MultiLine = true))
	FString Persona;

	/** A voice name from the server's list (GetVoiceNames); empty = its default voice. */
	UPROPERTY(EditAnywhere, BlueprintReadWrite, Category = "A2LLM|Character")
	FString Voice;

	/** Default emotion: neutral, happy, sad, angry, surprised, afraid, disgusted, ... (GetEmotionNames). */
	UPROPERTY(EditAnywhere, BlueprintReadWrite, Category = "A2LLM|Character")
	FString Emotion;

	UPROPERTY(EditAnywhere, BlueprintReadWrite, Category = "A2LLM|Character", meta = (ClampMin = "0", ClampMax = "1"))
	float EmotionIntensity = 0.f;

	/** The emotion as an instruction in the prompt: speech and face follow it through the model (A2-LLM). */
	UPROPERTY(EditAnywhere, BlueprintReadWrite, Category = "A2LLM|Character")
	bool bEmotionInPrompt = true;

	/** The emotion as a bounded offset/gain on the ARKit curves, blended over 300 ms (Audio2Face). */
	UPROPERTY(EditAnywhere, BlueprintReadWrite, Category = "A2LLM|Character")
	bool bEmotionOnFace = true;

	/** The game's situation, used from the next turn on (SetGameContext while playing); no conversation reset. */
	UPROPERTY(EditAnywhere, BlueprintReadWrite, Category = "A2LLM|Character", meta = (MultiLine = true))
	FString GameContext;

	/** Idle face between turns: blinks, saccades, breathing, a listening pose. */
	UPROPERTY(EditAnywhere, BlueprintReadWrite, Category = "A2LLM|Character")
	bool bIdleFace = true;

	/** Stream the microphone continuously; the server detects speech and barge-in. Needs echo cancellation or a
	 * headset, or the character's voice interrupts itself. */
	UPROPERTY(EditAnywhere, BlueprintReadWrite, Category = "A2LLM|Character")
	bool bHandsFree = false;

	/** Hands-free: the server heard the player start an utterance (its turn id has bit 31 set). */
	UPROPERTY(BlueprintAssignable, Category = "A2LLM")
	FA2LLMSpeechDelegate OnSpeechStarted;

	/** Hands-free: the utterance ended; its answer follows with this turn id. */
	UPROPERTY(BlueprintAssignable, Category = "A2LLM")
	FA2LLMSpeechDelegate OnSpeechEnded;

	/** The player spoke over the answer of TurnId: it was cancelled (the audio already faded out). */
	UPROPERTY(BlueprintAssignable, Category = "A2LLM")
	FA2LLMSpeechDelegate OnBargeIn;

	/** The server applied a character (12), game context (15) or emotion (17). */
	UPROPERTY(BlueprintAssignable, Category = "A2LLM")
	FA2LLMConfigDelegate OnConfigApplied;

	UPROPERTY(BlueprintAssignable, Category = "A2LLM")
	FA2LLMConnectedDelegate OnConnected;

	UPROPERTY(BlueprintAssignable, Category = "A2LLM")
	FA2LLMTextDelegate OnText;

	/** The server finished the answer (Status: 0 completed, 1 cancelled, 2 failed). */
	UPROPERTY(BlueprintAssignable, Category = "A2LLM")
	FA2LLMTurnDelegate OnTurnEnd;

	UPROPERTY(BlueprintAssignable, Category = "A2LLM")
	FA2LLMErrorDelegate OnError;

	UFUNCTION(BlueprintCallable, Category = "A2LLM")
	bool Connect();

	UFUNCTION(BlueprintCallable, Category = "A2LLM")
	void Disconnect();

	/** Push-to-talk pressed: interrupts a playing answer (barge-in) and opens the default microphone. */
	UFUNCTION(BlueprintCallable, Category = "A2LLM")
	bool BeginTalking();

	/** Push-to-talk released: ends the utterance; the answer follows. */
	UFUNCTION(BlueprintCallable, Category = "A2LLM")
	void EndTalking();

	UFUNCTION(BlueprintCallable, Category = "A2LLM")
	void CancelAnswer();

	/** Sends the character properties (after editing them while connected). False + OnError when refused. */
	UFUNCTION(BlueprintCallable, Category = "A2LLM|Character")
	bool ApplyCharacter();

	UFUNCTION(BlueprintCallable, Category = "A2LLM|Character")
	bool SetGameContext(const FString& Text);

	/** The emotion for the session, or only the next turn. */
	UFUNCTION(BlueprintCallable, Category = "A2LLM|Character")
	bool SetEmotion(const FString& EmotionName, float Intensity, bool bNextTurnOnly);

	/** A typed turn (chat box, accessibility), answered with speech and face; interrupts a playing answer.
	 * Returns the turn id, or a negative status. */
	UFUNCTION(BlueprintCallable, Category = "A2LLM|Character")
	int32 SendText(const FString& Text);

	UFUNCTION(BlueprintCallable, Category = "A2LLM|Character")
	bool StartHandsFree();

	UFUNCTION(BlueprintCallable, Category = "A2LLM|Character")
	void StopHandsFree();

	UFUNCTION(BlueprintPure, Category = "A2LLM|Character")
	TArray<FString> GetVoiceNames() const;

	UFUNCTION(BlueprintPure, Category = "A2LLM|Character")
	TArray<FString> GetEmotionNames() const;

	UFUNCTION(BlueprintPure, Category = "A2LLM")
	bool IsConnected() const;

	/** Head rotation of the face currently shown (degrees, head frame: +X forward, +Z up). */
	UFUNCTION(BlueprintPure, Category = "A2LLM")
	FRotator GetHeadRotation() const;

	/** Current value of a Live Link curve (e.g. JawOpen), 0 if unknown. */
	UFUNCTION(BlueprintPure, Category = "A2LLM")
	float GetCurveValue(FName Curve) const;

	//~ UActorComponent
	virtual void BeginPlay() override;
	virtual void EndPlay(const EEndPlayReason::Type EndPlayReason) override;
	virtual void TickComponent(float DeltaTime, ELevelTick TickType, FActorComponentTickFunction* ThisTickFunction) override;

private:
	void HandleEvent(const struct FA2LLMGameEvent& Event);
	void PublishFace();
	void OnMicrophoneAudio(const float* Audio, int32 NumFrames, int32 NumChannels, int32 SampleRate);

	FA2LLMConnectionPtr Connection;
	TSharedPtr<FA2LLMLiveLinkSource> LiveLinkSource;

	UPROPERTY(Transient)
	TObjectPtr<UA2LLMSoundWave> SoundWave;

	UPROPERTY(Transient)
	TObjectPtr<UAudioComponent> AudioComponent;

	TUniquePtr<Audio::FAudioCapture> Capture;
	FCriticalSection MicLock; // orders microphone sends against the end-of-utterance send
	bool bTalking = false; // guarded by MicLock
	bool bStreaming = false; // hands-free: guarded by MicLock
	bool OpenMicrophone();
	void CloseMicrophone();
	A2LLM::FCharacterUtf8 CharacterUtf8() const;
	bool bAnswerPending = false;
	uint32 CurrentTurn = 0;
	TArray<float> MicMono; // capture thread scratch

	TArray<FName> CurveNames;
	TArray<float> Curves;
	FRotator HeadRest = FRotator::ZeroRotator;
};
