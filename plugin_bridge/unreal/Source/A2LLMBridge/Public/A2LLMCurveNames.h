// Copyright a2llm. The Live Link 61 curve set (a2llm_rt/face/layouts.py LIVELINK61) and the head pose conversion.
#pragma once

#include "CoreMinimal.h"

namespace A2LLM
{
	constexpr int32 NumLiveLinkCurves = 61;
	constexpr int32 HeadYawIndex = 52;
	constexpr int32 HeadPitchIndex = 53;
	constexpr int32 HeadRollIndex = 54;

	/**
	 * Curve names in the order of Unreal's Live Link Face source: EARFaceBlendShape 0..60 without the enum prefix
	 * (EyeBlinkLeft ... TongueOut, then HeadYaw, HeadPitch, HeadRoll, LeftEyeYaw ... RightEyeRoll). The server sends
	 * the same names once in its Welcome; the component checks them against this table.
	 */
	A2LLMBRIDGE_API const TArray<FName>& LiveLinkCurveNames();

	/**
	 * Live Link head curves (radians) -> a rotator (degrees) in the head's own frame. The curves follow an Unreal
	 * rotator (a2llm_rt/face/flame_to_arkit.py): HeadYaw > 0 turns toward the subject's right, HeadPitch > 0 lifts the
	 * chin, HeadRoll > 0 tilts toward the right shoulder, applied yaw -> pitch -> roll, so they map 1:1 onto
	 * FRotator(Pitch, Yaw, Roll) for a head facing +X with +Z up. Rigs with other bone axes compose a rest rotation.
	 */
	inline FRotator HeadRotatorFromCurves(float YawRad, float PitchRad, float RollRad)
	{
		return FRotator(FMath::RadiansToDegrees(PitchRad), FMath::RadiansToDegrees(YawRad),
			FMath::RadiansToDegrees(RollRad));
	}
}
