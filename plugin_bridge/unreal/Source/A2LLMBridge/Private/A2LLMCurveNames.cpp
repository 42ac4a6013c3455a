// Copyright a2llm.
#include "A2LLMCurveNames.h"

const TArray<FName>& A2LLM::LiveLinkCurveNames()
{
	static const TArray<FName> Names = []
	{
		static const TCHAR* const Raw[NumLiveLinkCurves] = {
			TEXT("EyeBlinkLeft"), TEXT("EyeLookDownLeft"), TEXT("EyeLookInLeft"), TEXT("EyeLookOutLeft"),
			TEXT("EyeLookUpLeft"), TEXT("EyeSquintLeft"), TEXT("EyeWideLeft"), TEXT("EyeBlinkRight"),
			TEXT("EyeLookDownRight"), TEXT("EyeLookInRight"), TEXT("EyeLookOutRight"), TEXT("EyeLookUpRight"),
			TEXT("EyeSquintRight"), TEXT("EyeWideRight"), TEXT("JawForward"), TEXT("JawLeft"), TEXT("JawRight"),
			TEXT("JawOpen"), TEXT("MouthClose"), TEXT("MouthFunnel"), TEXT("MouthPucker"), TEXT("MouthLeft"),
			TEXT("MouthRight"), TEXT("MouthSmileLeft"), TEXT("MouthSmileRight"), TEXT("MouthFrownLeft"),
			TEXT("MouthFrownRight"), TEXT("MouthDimpleLeft"), TEXT("MouthDimpleRight"), TEXT("MouthStretchLeft"),
			TEXT("MouthStretchRight"), TEXT("MouthRollLower"), TEXT("MouthRollUpper"), TEXT("MouthShrugLower"),
			TEXT("MouthShrugUpper"), TEXT("MouthPressLeft"), TEXT("MouthPressRight"), TEXT("MouthLowerDownLeft"),
			TEXT("MouthLowerDownRight"), TEXT("MouthUpperUpLeft"), TEXT("MouthUpperUpRight"), TEXT("BrowDownLeft"),
			TEXT("BrowDownRight"), TEXT("BrowInnerUp"), TEXT("BrowOuterUpLeft"), TEXT("BrowOuterUpRight"),
			TEXT("CheekPuff"), TEXT("CheekSquintLeft"), TEXT("CheekSquintRight"), TEXT("NoseSneerLeft"),
			TEXT("NoseSneerRight"), TEXT("TongueOut"),
			TEXT("HeadYaw"), TEXT("HeadPitch"), TEXT("HeadRoll"),
			TEXT("LeftEyeYaw"), TEXT("LeftEyePitch"), TEXT("LeftEyeRoll"),
			TEXT("RightEyeYaw"), TEXT("RightEyePitch"), TEXT("RightEyeRoll"),
		};
		TArray<FName> Out;
		Out.Reserve(NumLiveLinkCurves);
		for (const TCHAR* Name : Raw)
		{
			Out.Add(FName(Name));
		}
		return Out;
	}();
	return Names;
}
