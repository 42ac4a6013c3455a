// Copyright a2llm.
#include "A2LLMBridgeModule.h"

#include "HAL/PlatformProcess.h"
#include "Interfaces/IPluginManager.h"
#include "Misc/Paths.h"
#include "Modules/ModuleManager.h"

DEFINE_LOG_CATEGORY(LogA2LLM);

namespace
{
	A2LLM::FNativeApi GApi;

#if PLATFORM_WINDOWS
	const TCHAR* const CoreFile = TEXT("a2llm_client.dll");
	const TCHAR* const PlatformDir = TEXT("Win64");
#elif PLATFORM_MAC
	const TCHAR* const CoreFile = TEXT("liba2llm_client.dylib");
	const TCHAR* const PlatformDir = TEXT("Mac");
#else
	const TCHAR* const CoreFile = TEXT("liba2llm_client.so");
	const TCHAR* const PlatformDir = TEXT("Linux");
#endif
}

const A2LLM::FNativeApi& A2LLM::Api()
{
	return GApi;
}

void FA2LLMBridgeModule::StartupModule()
{
	// Where the core is: the plugin's Binaries/<Platform> (staged into packaged games by Build.cs's
	// RuntimeDependencies, as in Epic's ThirdPartyLibrary template); in the editor also the ThirdParty folder of a
	// source checkout. libzmq's DLL sits beside a2llm_client.dll: the folder is pushed so Windows finds it.
	const TSharedPtr<IPlugin> Plugin = IPluginManager::Get().FindPlugin(TEXT("A2LLMBridge"));
	if (!Plugin.IsValid())
	{
		UE_LOG(LogA2LLM, Error, TEXT("plugin A2LLMBridge not found by the plugin manager"));
		return;
	}
	const FString Base = Plugin->GetBaseDir();
	TArray<FString> Dirs = {FPaths::Combine(Base, TEXT("Binaries"), PlatformDir)};
#if WITH_EDITOR
	// Editor fallbacks for a plugin used straight from a source checkout (plugin_bridge/unreal): a core copied into
	// its ThirdParty folder, or the repository's own CMake builds (`make native`, `make native-windows`).
	Dirs.Add(FPaths::Combine(Base, TEXT("Source/ThirdParty/a2llm_client/lib"), PlatformDir));
	Dirs.Add(FPaths::Combine(Base, TEXT("../../build"), PLATFORM_WINDOWS ? TEXT("native-windows") : TEXT("native")));
#endif
	for (const FString& Dir : Dirs)
	{
		const FString Path = FPaths::Combine(Dir, CoreFile);
		if (!FPaths::FileExists(Path))
		{
			continue;
		}
		FPlatformProcess::PushDllDirectory(*Dir);
		NativeHandle = FPlatformProcess::GetDllHandle(*Path);
		FPlatformProcess::PopDllDirectory(*Dir);
		if (NativeHandle == nullptr)
		{
			UE_LOG(LogA2LLM, Error, TEXT("%s exists but could not be loaded (missing libzmq beside it?)"), *Path);
			return;
		}
		UE_LOG(LogA2LLM, Log, TEXT("loaded the a2llm native core from %s"), *Path);
		break;
	}
	if (NativeHandle == nullptr)
	{
		UE_LOG(LogA2LLM, Error, TEXT("%s not found in %s: install the plugin with its Binaries (see its README)"),
			CoreFile, *FString::Join(Dirs, TEXT(", ")));
		return;
	}
	void* const Handle = NativeHandle;
	const char* const Problem = GApi.Load([Handle](const char* Name)
		{ return FPlatformProcess::GetDllExport(Handle, UTF8_TO_TCHAR(Name)); });
	if (Problem != nullptr)
	{
		UE_LOG(LogA2LLM, Error, TEXT("a2llm native core unusable: %hs"), Problem);
		return;
	}
	UE_LOG(LogA2LLM, Log, TEXT("a2llm native core %hs (ABI %u, protocol %u)"), GApi.a2llm_version(),
		GApi.a2llm_abi_version(), GApi.a2llm_protocol_version());
}

void FA2LLMBridgeModule::ShutdownModule()
{
	GApi = A2LLM::FNativeApi();
	if (NativeHandle != nullptr)
	{
		FPlatformProcess::FreeDllHandle(NativeHandle);
		NativeHandle = nullptr;
	}
}

bool FA2LLMBridgeModule::IsNativeCoreAvailable()
{
	return GApi.IsLoaded();
}

IMPLEMENT_MODULE(FA2LLMBridgeModule, A2LLMBridge)
