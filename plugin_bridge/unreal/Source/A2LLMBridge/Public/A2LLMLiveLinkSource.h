// Copyright a2llm. A Live Link source publishing the a2llm face stream as one Basic-role subject with the Live Link
// Face curve set: the curve names go out once as static data (FLiveLinkBaseStaticData::PropertyNames), every frame
// carries values by index (FLiveLinkBaseFrameData::PropertyValues). The component pushes from the game thread;
// ILiveLinkClient::Push*_AnyThread are thread-safe.
#pragma once

#include "CoreMinimal.h"
#include "ILiveLinkSource.h"

class ILiveLinkClient;

class A2LLMBRIDGE_API FA2LLMLiveLinkSource : public ILiveLinkSource
{
public:
	explicit FA2LLMLiveLinkSource(const FString& InEndpoint);

	//~ ILiveLinkSource
	virtual void ReceiveClient(ILiveLinkClient* InClient, FGuid InSourceGuid) override;
	virtual bool IsSourceStillValid() const override;
	virtual bool RequestSourceShutdown() override;
	virtual FText GetSourceType() const override;
	virtual FText GetSourceMachineName() const override;
	virtual FText GetSourceStatus() const override;

	/** Static data: the subject's curve names (once per connection; pushing again clears buffered frames). */
	void PushStaticData(FName SubjectName, const TArray<FName>& CurveNames);

	/** One frame: Num values in the order of the static data's names. Ignored until static data was pushed. */
	void PushFrame(FName SubjectName, const float* Values, int32 Num);

	void SetStatus(const FText& InStatus) { Status = InStatus; }

	/** Registers a new source with the engine's Live Link client (game thread); null when Live Link is unavailable. */
	static TSharedPtr<FA2LLMLiveLinkSource> AddToLiveLink(const FString& InEndpoint);
	void RemoveFromLiveLink();

private:
	ILiveLinkClient* Client = nullptr;
	FGuid SourceGuid;
	FString Endpoint;
	FText Status;
	int32 NumCurves = 0;
};
