// Name-mapping asset: ARKit curve name -> blend shape name(s) on a custom rig. Create one with
// Assets > Create > A2LLM > Blend Shape Map; an avatar without one uses the default identity mapping.
using System;
using System.Collections.Generic;
using UnityEngine;

namespace A2LLM
{
    [CreateAssetMenu(fileName = "A2LLMBlendShapeMap", menuName = "A2LLM/Blend Shape Map")]
    public sealed class A2LLMBlendShapeMap : ScriptableObject
    {
        [Serializable]
        public sealed class Entry
        {
            [Tooltip("ARKit curve, e.g. jawOpen (Live Link's JawOpen is accepted too)")]
            public string arkitName = "";

            [Tooltip("Blend shape on the mesh, e.g. Mouth_Open (matched case-insensitively)")]
            public string blendShapeName = "";

            [Tooltip("Curve value multiplier before clamping to [0, 1]")]
            public float weightScale = 1f;
        }

        /// <summary>One resolved binding: curve index (into the received layout) -> blend shape index on the mesh.</summary>
        public struct Binding
        {
            public int CurveIndex;
            public int ShapeIndex;
            public float Scale;
        }

        [Tooltip("Explicit mappings; an ARKit curve may appear several times to drive several shapes")]
        public List<Entry> entries = new List<Entry>();

        [Tooltip("Curves without an entry drive the blend shape of the same name (prefix + ARKit name), if the mesh has one")]
        public bool identityForUnmapped = true;

        [Tooltip("Prefix of the mesh's blend shape names for the identity mapping, e.g. \"blendShape1.\"")]
        public string blendShapePrefix = "";

        /// <summary>A map with no entries: every ARKit curve drives the blend shape of the same name.</summary>
        public static A2LLMBlendShapeMap CreateDefault()
        {
            var map = CreateInstance<A2LLMBlendShapeMap>();
            map.name = "A2LLMBlendShapeMap (identity)";
            return map;
        }

        /// <summary>
        /// Resolves curves against a mesh. curveNames are the received layout's names (from the Welcome, e.g. Live
        /// Link's EyeBlinkLeft or ARKit's eyeBlinkLeft; non-ARKit names such as HeadYaw are skipped). Matching of
        /// both curve and blend shape names is case-insensitive. Unknown names are reported in `problems`.
        /// </summary>
        public List<Binding> Resolve(Mesh mesh, string[] curveNames, List<string> problems = null)
        {
            var result = new List<Binding>();
            if (mesh == null || curveNames == null) return result;

            var shapes = new Dictionary<string, int>(StringComparer.OrdinalIgnoreCase);
            for (int s = 0; s < mesh.blendShapeCount; s++)
            {
                string n = mesh.GetBlendShapeName(s);
                if (!shapes.ContainsKey(n)) shapes.Add(n, s);
            }

            // ARKit index -> curve index in the received layout
            var curveOf = new int[A2LLMCurves.Arkit52.Length];
            for (int a = 0; a < curveOf.Length; a++) curveOf[a] = -1;
            for (int c = 0; c < curveNames.Length; c++)
            {
                int a = A2LLMCurves.ArkitIndex(curveNames[c]);
                if (a >= 0 && curveOf[a] < 0) curveOf[a] = c;
            }

            var mapped = new bool[A2LLMCurves.Arkit52.Length];
            foreach (var e in entries)
            {
                if (e == null) continue;
                int a = A2LLMCurves.ArkitIndex(e.arkitName);
                if (a < 0)
                {
                    if (problems != null) problems.Add("not an ARKit curve: '" + e.arkitName + "'");
                    continue;
                }
                mapped[a] = true;
                int shape;
                if (string.IsNullOrEmpty(e.blendShapeName)) continue; // explicit "drive nothing"
                if (!shapes.TryGetValue(e.blendShapeName, out shape))
                {
                    if (problems != null) problems.Add("mesh has no blend shape '" + e.blendShapeName + "' (for " + e.arkitName + ")");
                    continue;
                }
                if (curveOf[a] >= 0) result.Add(new Binding { CurveIndex = curveOf[a], ShapeIndex = shape, Scale = e.weightScale });
            }

            if (identityForUnmapped)
            {
                for (int a = 0; a < mapped.Length; a++)
                {
                    int shape;
                    if (mapped[a] || curveOf[a] < 0) continue;
                    if (shapes.TryGetValue((blendShapePrefix ?? "") + A2LLMCurves.Arkit52[a], out shape))
                        result.Add(new Binding { CurveIndex = curveOf[a], ShapeIndex = shape, Scale = 1f });
                }
            }
            return result;
        }

        /// <summary>Sets weights (0..100 = clamp01(curve * scale) * 100) for the bindings from one frame of curves.</summary>
        public static void Apply(SkinnedMeshRenderer renderer, List<Binding> bindings, float[] curves, int count)
        {
            for (int b = 0; b < bindings.Count; b++)
            {
                var bind = bindings[b];
                if (bind.CurveIndex >= count) continue;
                renderer.SetBlendShapeWeight(bind.ShapeIndex, Mathf.Clamp01(curves[bind.CurveIndex] * bind.Scale) * 100f);
            }
        }
    }
}
