// Build rules of the A2LLMBridge runtime module. The a2llm native client core is a prebuilt shared library per
// platform (built with CMake from plugin_bridge/native), placed under Source/ThirdParty/a2llm_client:
//   include/a2llm_client.h                      (falls back to ../native/include when the plugin sits in the repo)
//   lib/Win64/a2llm_client.lib + a2llm_client.dll (+ libzmq's DLL unless the core links libzmq statically)
//   lib/Linux/x86_64-unknown-linux-gnu/liba2llm_client.so
//   lib/Mac/liba2llm_client.dylib
// RuntimeDependencies copy the shared libraries next to the module's binaries when packaging.
using System.IO;
using UnrealBuildTool;

public class A2LLMBridge : ModuleRules
{
	public A2LLMBridge(ReadOnlyTargetRules Target) : base(Target)
	{
		PCHUsage = PCHUsageMode.UseExplicitOrSharedPCHs;

		PublicDependencyModuleNames.AddRange(new string[]
		{
			"Core", "CoreUObject", "Engine", "LiveLinkInterface",
		});
		PrivateDependencyModuleNames.AddRange(new string[]
		{
			"AudioMixerCore", "AudioCaptureCore", "Projects",
		});

		string ThirdParty = Path.Combine(PluginDirectory, "Source", "ThirdParty", "a2llm_client");
		string Include = Path.Combine(ThirdParty, "include");
		if (!File.Exists(Path.Combine(Include, "a2llm_client.h")))
		{
			Include = Path.GetFullPath(Path.Combine(PluginDirectory, "..", "native", "include"));
		}
		PublicIncludePaths.Add(Include);

		if (Target.Platform == UnrealTargetPlatform.Win64)
		{
			string Lib = Path.Combine(ThirdParty, "lib", "Win64");
			PublicAdditionalLibraries.Add(Path.Combine(Lib, "a2llm_client.lib"));
			PublicDelayLoadDLLs.Add("a2llm_client.dll");
			foreach (string Dll in Directory.Exists(Lib) ? Directory.GetFiles(Lib, "*.dll") : new string[0])
			{
				RuntimeDependencies.Add("$(BinaryOutputDir)/" + Path.GetFileName(Dll), Dll);
			}
		}
		else if (Target.Platform == UnrealTargetPlatform.Linux)
		{
			string Lib = Path.Combine(ThirdParty, "lib", "Linux", "x86_64-unknown-linux-gnu");
			PublicAdditionalLibraries.Add(Path.Combine(Lib, "liba2llm_client.so"));
			foreach (string So in Directory.Exists(Lib) ? Directory.GetFiles(Lib, "liba2llm_client.so*") : new string[0])
			{
				RuntimeDependencies.Add("$(BinaryOutputDir)/" + Path.GetFileName(So), So);
			}
		}
		else if (Target.Platform == UnrealTargetPlatform.Mac)
		{
			string Dylib = Path.Combine(ThirdParty, "lib", "Mac", "liba2llm_client.dylib");
			PublicAdditionalLibraries.Add(Dylib);
			RuntimeDependencies.Add("$(BinaryOutputDir)/liba2llm_client.dylib", Dylib);
		}
	}
}
