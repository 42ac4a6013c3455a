// Build rules of the A2LLMBridge runtime module (Unreal Engine 5.3 or later).
//
// The a2llm native client core is a prebuilt shared library per platform (plugin_bridge/native; `make plugins` puts
// it here). Nothing links against it: the module loads it at run time with FPlatformProcess::GetDllHandle and
// resolves the C ABI with GetDllExport (A2LLMNativeApi.h), as Epic's ThirdPartyLibrary plugin template does, so no
// import library is needed and a missing core is a logged error instead of a failed start.
//   Binaries/Win64/a2llm_client.dll + libzmq-v141-mt-4_3_4.dll + libsodium-*.dll   (MinGW-w64 build, self-contained)
//   Binaries/Linux/liba2llm_client.so (+ libzmq.so.5 beside it, or the system's libzmq5)
//   Binaries/Mac/liba2llm_client.dylib                                             (build it yourself: see README)
// RuntimeDependencies stage exactly these files into packaged games at the same place under the plugin, where the
// module looks first. In the editor of a source checkout, Source/ThirdParty/a2llm_client/lib/<Platform> also works.
using System;
using System.IO;
using UnrealBuildTool;

public class A2LLMBridge : ModuleRules
{
	public A2LLMBridge(ReadOnlyTargetRules Target) : base(Target)
	{
		if (Target.Version.MajorVersion < 5 || (Target.Version.MajorVersion == 5 && Target.Version.MinorVersion < 3))
		{
			throw new BuildException(string.Format(
				"A2LLMBridge needs Unreal Engine 5.3 or later (AudioCapture's 5.3 API); this is {0}.{1}",
				Target.Version.MajorVersion, Target.Version.MinorVersion));
		}
		PCHUsage = PCHUsageMode.UseExplicitOrSharedPCHs;

		PublicDependencyModuleNames.AddRange(new string[]
		{
			"Core", "CoreUObject", "Engine", "LiveLinkInterface",
			"AudioCaptureCore", // A2LLMAvatarComponent.h holds a TUniquePtr<Audio::FAudioCapture> (complete type)
		});
		PrivateDependencyModuleNames.AddRange(new string[]
		{
			"AudioMixerCore", "Projects",
		});

		// The C ABI header: the plugin's own copy, else the repository's (plugin inside a checkout).
		string Include = Path.Combine(PluginDirectory, "Source", "ThirdParty", "a2llm_client", "include");
		if (!File.Exists(Path.Combine(Include, "a2llm_client.h")))
		{
			Include = Path.GetFullPath(Path.Combine(PluginDirectory, "..", "native", "include"));
		}
		PublicIncludePaths.Add(Include);

		string Platform = null;
		string Pattern = null;
		if (Target.Platform == UnrealTargetPlatform.Win64)
		{
			Platform = "Win64";
			Pattern = "*.dll";
		}
		else if (Target.Platform == UnrealTargetPlatform.Linux)
		{
			Platform = "Linux";
			Pattern = "*.so*";
		}
		else if (Target.Platform == UnrealTargetPlatform.Mac)
		{
			Platform = "Mac";
			Pattern = "*.dylib";
		}
		if (Platform == null)
		{
			return;
		}
		string Binaries = Path.Combine(PluginDirectory, "Binaries", Platform);
		string[] Natives = Directory.Exists(Binaries) ? Directory.GetFiles(Binaries, Pattern) : new string[0];
		foreach (string Native in Natives)
		{
			if (Path.GetFileName(Native).StartsWith("UnrealEditor-") || Path.GetFileName(Native).StartsWith("UE4Editor-"))
			{
				continue; // the module's own binaries
			}
			RuntimeDependencies.Add("$(PluginDir)/Binaries/" + Platform + "/" + Path.GetFileName(Native));
		}
		if (Natives.Length == 0)
		{
			Console.WriteLine("A2LLMBridge: no native core in {0}; the module will log an error at start-up", Binaries);
		}
	}
}
