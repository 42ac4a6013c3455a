// Copyright a2llm. The A2LLMBridge runtime module: loads the a2llm native client core (a2llm_client.h).
#pragma once

#include "CoreMinimal.h"
#include "Modules/ModuleInterface.h"

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
