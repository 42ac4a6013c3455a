// Copyright a2llm. The A2LLMBridge runtime module: loads the a2llm native client core (a2llm_client.h) at run time.
#pragma once

#include "CoreMinimal.h"
#include "Misc/EngineVersionComparison.h"
#include "Modules/ModuleInterface.h"
#include "A2LLMNativeApi.h"

// AudioCapture's Audio::FAudioCapture::OpenAudioCaptureStream(FAudioCaptureDeviceParams, ...) and the Live Link /
// procedural-audio APIs used here are those of Unreal Engine 5.3 and later (A2LLMBridge.Build.cs checks it too).
#if UE_VERSION_OLDER_THAN(5, 3, 0)
#error "A2LLMBridge needs Unreal Engine 5.3 or later"
#endif

DECLARE_LOG_CATEGORY_EXTERN(LogA2LLM, Log, All);

class FA2LLMBridgeModule : public IModuleInterface
{
public:
	virtual void StartupModule() override;
	virtual void ShutdownModule() override;

	/** True when the native core is loaded and speaks the ABI this plugin was written against. */
	static bool IsNativeCoreAvailable();

private:
	void* NativeHandle = nullptr;
};

namespace A2LLM
{
	/** The native core's functions (all null until the module loaded the core; see IsNativeCoreAvailable). */
	A2LLMBRIDGE_API const FNativeApi& Api();
}
