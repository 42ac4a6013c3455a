// Copyright a2llm.
#include "A2LLMBridgeModule.h"

#include "Interfaces/IPluginManager.h"
#include "Misc/Paths.h"
#include "Modules/ModuleManager.h"
#include "a2llm_client.h"

DEFINE_LOG_CATEGORY(LogA2LLM);

static bool GNativeCoreOk = false;

void FA2LLMBridgeModule::StartupModule()
{
#if PLATFORM_WINDOWS
	// a2llm_client.dll is delay-loaded (Build.cs): load it from the plugin's ThirdParty folder before the first call.
	const TSharedPtr<IPlugin> Plugin = IPluginManager::Get().FindPlugin(TEXT("A2LLMBridge"));
	if (Plugin.IsValid())
	{
		const FString Dir = FPaths::Combine(Plugin->GetBaseDir(), TEXT("Source/ThirdParty/a2llm_client/lib/Win64"));
		FPlatformProcess::PushDllDirectory(*Dir); // libzmq's DLL beside it resolves too
		NativeHandle = FPlatformProcess::GetDllHandle(*FPaths::Combine(Dir, TEXT("a2llm_client.dll")));
		FPlatformProcess::PopDllDirectory(*Dir);
	}
	if (NativeHandle == nullptr)
	{
		UE_LOG(LogA2LLM, Error, TEXT("a2llm_client.dll not found; see the A2LLMBridge README (ThirdParty)"));
		return;
	}
#endif
	const uint32 Abi = a2llm_abi_version();
	GNativeCoreOk = Abi == A2LLM_ABI_VERSION;
	if (GNativeCoreOk)
	{
		UE_LOG(LogA2LLM, Log, TEXT("a2llm native core %hs (ABI %u, protocol %u)"), a2llm_version(), Abi,
			a2llm_protocol_version());
	}
	else
	{
		UE_LOG(LogA2LLM, Error, TEXT("a2llm native core ABI %u, plugin expects %d: rebuild the core"), Abi,
			A2LLM_ABI_VERSION);
	}
}

void FA2LLMBridgeModule::ShutdownModule()
{
	GNativeCoreOk = false;
	if (NativeHandle != nullptr)
	{
		FPlatformProcess::FreeDllHandle(NativeHandle);
		NativeHandle = nullptr;
	}
}

bool FA2LLMBridgeModule::IsNativeCoreAvailable()
{
	return GNativeCoreOk;
}

IMPLEMENT_MODULE(FA2LLMBridgeModule, A2LLMBridge)
