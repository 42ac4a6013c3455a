// Copyright a2llm.
#include "A2LLMLiveLinkSource.h"

#include "Features/IModularFeatures.h"
#include "HAL/PlatformTime.h"
#include "ILiveLinkClient.h"
#include "LiveLinkTypes.h"
#include "Roles/LiveLinkBasicRole.h"
#include "Roles/LiveLinkBasicTypes.h"

#define LOCTEXT_NAMESPACE "A2LLMLiveLinkSource"

FA2LLMLiveLinkSource::FA2LLMLiveLinkSource(const FString& InEndpoint)
	: Endpoint(InEndpoint)
	, Status(LOCTEXT("Connecting", "Connecting"))
{
}

TSharedPtr<FA2LLMLiveLinkSource> FA2LLMLiveLinkSource::AddToLiveLink(const FString& InEndpoint)
{
	IModularFeatures& Features = IModularFeatures::Get();
	if (!Features.IsModularFeatureAvailable(ILiveLinkClient::ModularFeatureName))
	{
		return nullptr;
	}
	ILiveLinkClient& LiveLink = Features.GetModularFeature<ILiveLinkClient>(ILiveLinkClient::ModularFeatureName);
	TSharedPtr<FA2LLMLiveLinkSource> Source = MakeShared<FA2LLMLiveLinkSource>(InEndpoint);
	LiveLink.AddSource(Source); // calls ReceiveClient
	return Source;
}

void FA2LLMLiveLinkSource::RemoveFromLiveLink()
{
	if (Client != nullptr)
	{
		Client->RemoveSource(SourceGuid); // RequestSourceShutdown follows
	}
}

void FA2LLMLiveLinkSource::ReceiveClient(ILiveLinkClient* InClient, FGuid InSourceGuid)
{
	Client = InClient;
	SourceGuid = InSourceGuid;
}

bool FA2LLMLiveLinkSource::IsSourceStillValid() const
{
	return Client != nullptr;
}

bool FA2LLMLiveLinkSource::RequestSourceShutdown()
{
	Client = nullptr; // the connection is owned by the component, nothing else to wait for
	return true;
}

FText FA2LLMLiveLinkSource::GetSourceType() const
{
	return LOCTEXT("SourceType", "A2LLM");
}

FText FA2LLMLiveLinkSource::GetSourceMachineName() const
{
	return FText::FromString(Endpoint);
}

FText FA2LLMLiveLinkSource::GetSourceStatus() const
{
	return Status;
}

void FA2LLMLiveLinkSource::PushStaticData(FName SubjectName, const TArray<FName>& CurveNames)
{
	if (Client == nullptr)
	{
		return;
	}
	FLiveLinkStaticDataStruct StaticDataStruct(FLiveLinkBaseStaticData::StaticStruct());
	FLiveLinkBaseStaticData* StaticData = StaticDataStruct.Cast<FLiveLinkBaseStaticData>();
	StaticData->PropertyNames = CurveNames;
	NumCurves = CurveNames.Num();
	Client->PushSubjectStaticData_AnyThread(FLiveLinkSubjectKey(SourceGuid, SubjectName),
		ULiveLinkBasicRole::StaticClass(), MoveTemp(StaticDataStruct));
}

void FA2LLMLiveLinkSource::PushFrame(FName SubjectName, const float* Values, int32 Num)
{
	if (Client == nullptr || NumCurves == 0 || Num != NumCurves)
	{
		return; // frame values must match the static data's names one to one
	}
	FLiveLinkFrameDataStruct FrameDataStruct(FLiveLinkBaseFrameData::StaticStruct());
	FLiveLinkBaseFrameData* FrameData = FrameDataStruct.Cast<FLiveLinkBaseFrameData>();
	FrameData->WorldTime = FPlatformTime::Seconds();
	FrameData->PropertyValues.Append(Values, Num);
	Client->PushSubjectFrameData_AnyThread(FLiveLinkSubjectKey(SourceGuid, SubjectName), MoveTemp(FrameDataStruct));
}

#undef LOCTEXT_NAMESPACE
