// Curve names (ARKIT52 / LIVELINK61, as in a2llm_rt/face/layouts.py) and the head pose conversion to Unity.
using System;
using UnityEngine;

namespace A2LLM
{
    public static class A2LLMCurves
    {
        /// <summary>Apple ARFaceAnchor blend shape order (= Unreal EARFaceBlendShape 0..51), ARKit camelCase.</summary>
        public static readonly string[] Arkit52 =
        {
            "eyeBlinkLeft", "eyeLookDownLeft", "eyeLookInLeft", "eyeLookOutLeft", "eyeLookUpLeft", "eyeSquintLeft",
            "eyeWideLeft", "eyeBlinkRight", "eyeLookDownRight", "eyeLookInRight", "eyeLookOutRight", "eyeLookUpRight",
            "eyeSquintRight", "eyeWideRight", "jawForward", "jawLeft", "jawRight", "jawOpen", "mouthClose",
            "mouthFunnel", "mouthPucker", "mouthLeft", "mouthRight", "mouthSmileLeft", "mouthSmileRight",
            "mouthFrownLeft", "mouthFrownRight", "mouthDimpleLeft", "mouthDimpleRight", "mouthStretchLeft",
            "mouthStretchRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper",
            "mouthPressLeft", "mouthPressRight", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthUpperUpLeft",
            "mouthUpperUpRight", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
            "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "noseSneerLeft", "noseSneerRight", "tongueOut",
        };

        /// <summary>The 9 rotation curves (radians) that follow ARKIT52 in LIVELINK61.</summary>
        public static readonly string[] LiveLinkExtra =
        {
            "HeadYaw", "HeadPitch", "HeadRoll", "LeftEyeYaw", "LeftEyePitch", "LeftEyeRoll", "RightEyeYaw",
            "RightEyePitch", "RightEyeRoll",
        };

        public const int HeadYawIndex = 52;
        public const int HeadPitchIndex = 53;
        public const int HeadRollIndex = 54;

        private static string[] _liveLink61;

        /// <summary>Unreal Live Link Face curve set: ARKIT52 in PascalCase, then LiveLinkExtra.</summary>
        public static string[] LiveLink61
        {
            get
            {
                if (_liveLink61 == null)
                {
                    var names = new string[61];
                    for (int i = 0; i < 52; i++) names[i] = char.ToUpperInvariant(Arkit52[i][0]) + Arkit52[i].Substring(1);
                    Array.Copy(LiveLinkExtra, 0, names, 52, 9);
                    _liveLink61 = names;
                }
                return _liveLink61;
            }
        }

        /// <summary>Index of an ARKit curve given in either spelling (eyeBlinkLeft / EyeBlinkLeft, any case), or -1.</summary>
        public static int ArkitIndex(string name)
        {
            if (string.IsNullOrEmpty(name)) return -1;
            for (int i = 0; i < Arkit52.Length; i++)
                if (string.Equals(Arkit52[i], name, StringComparison.OrdinalIgnoreCase)) return i;
            return -1;
        }

        /// <summary>
        /// Live Link head curves -> a Unity rotation in the face's own frame.
        /// Curve convention (a2llm_rt/face/flame_to_arkit.py; an Unreal rotator of the head in the subject's frame):
        /// HeadYaw &gt; 0 turns the head toward the subject's right, HeadPitch &gt; 0 lifts the chin, HeadRoll &gt; 0 tilts
        /// the head toward the right shoulder; applied yaw, then pitch, then roll (intrinsic).
        /// Unity is left-handed with +y up, +z forward (out of the face), +x the subject's right, and
        /// Quaternion.Euler(x, y, z) is the same intrinsic yaw(y) -> pitch(x) -> roll(z) order, where +y turns forward
        /// toward +x (right: same sign as HeadYaw), +x tips forward downward (opposite of HeadPitch) and +z raises the
        /// right side (opposite of HeadRoll). Hence Euler(-pitch, +yaw, -roll) in degrees.
        /// </summary>
        public static Quaternion HeadRotation(float yawRad, float pitchRad, float rollRad)
        {
            return Quaternion.Euler(-pitchRad * Mathf.Rad2Deg, yawRad * Mathf.Rad2Deg, -rollRad * Mathf.Rad2Deg);
        }

        /// <summary>
        /// The head rotation expressed in a bone whose local axes differ from the face frame above: boneFromFace is
        /// the bone's rest orientation relative to the face frame (identity when the bone already looks down +z with
        /// +y up). Result = restLocal * inverse(boneFromFace) * face * boneFromFace.
        /// </summary>
        public static Quaternion HeadRotationForBone(Quaternion restLocal, Quaternion boneFromFace, Quaternion face)
        {
            return restLocal * Quaternion.Inverse(boneFromFace) * face * boneFromFace;
        }
    }
}
