// UnityEngine rendering stubs: Mesh with named blend shapes, SkinnedMeshRenderer holding blend shape weights.
using System;
using System.Collections.Generic;

namespace UnityEngine
{
    public sealed class Mesh : Object
    {
        private readonly List<string> _shapes = new List<string>();

        /// <summary>Test hook: a mesh whose blend shapes have these names.</summary>
        internal static Mesh TestWithBlendShapes(params string[] names)
        {
            var m = new Mesh();
            m._shapes.AddRange(names);
            return m;
        }

        public int blendShapeCount
        {
            get { return _shapes.Count; }
        }

        public string GetBlendShapeName(int shapeIndex)
        {
            if (shapeIndex < 0 || shapeIndex >= _shapes.Count) throw new ArgumentOutOfRangeException("shapeIndex");
            return _shapes[shapeIndex];
        }

        /// <summary>Like Unity: exact (case-sensitive) match, -1 when absent.</summary>
        public int GetBlendShapeIndex(string blendShapeName)
        {
            return _shapes.IndexOf(blendShapeName);
        }
    }

    public class Renderer : Component
    {
        public bool enabled = true;
    }

    public sealed class SkinnedMeshRenderer : Renderer
    {
        private Mesh _mesh;
        internal float[] Weights = new float[0];
        internal int SetCalls;

        public Mesh sharedMesh
        {
            get { return _mesh; }
            set
            {
                _mesh = value;
                Weights = new float[value != null ? value.blendShapeCount : 0];
            }
        }

        public void SetBlendShapeWeight(int index, float value)
        {
            if (index < 0 || index >= Weights.Length) throw new ArgumentOutOfRangeException("index");
            Weights[index] = value;
            SetCalls++;
        }

        public float GetBlendShapeWeight(int index)
        {
            return Weights[index];
        }
    }
}
