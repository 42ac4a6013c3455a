// UnityEngine math stubs: Vector3, Quaternion (Unity's conventions: Euler applies z, then x, then y; lhs * rhs
// applies rhs first; left-handed y-up z-forward space, so AngleAxis(+90, up) turns forward into right), Mathf.
using System;

namespace UnityEngine
{
    [Serializable]
    public struct Vector3
    {
        public float x;
        public float y;
        public float z;

        public Vector3(float x, float y, float z)
        {
            this.x = x;
            this.y = y;
            this.z = z;
        }

        public static Vector3 zero
        {
            get { return new Vector3(0, 0, 0); }
        }

        public static Vector3 up
        {
            get { return new Vector3(0, 1, 0); }
        }

        public static Vector3 right
        {
            get { return new Vector3(1, 0, 0); }
        }

        public static Vector3 forward
        {
            get { return new Vector3(0, 0, 1); }
        }

        public override string ToString()
        {
            return string.Format("({0:F3}, {1:F3}, {2:F3})", x, y, z);
        }
    }

    [Serializable]
    public struct Quaternion
    {
        public float x;
        public float y;
        public float z;
        public float w;

        public Quaternion(float x, float y, float z, float w)
        {
            this.x = x;
            this.y = y;
            this.z = z;
            this.w = w;
        }

        public static Quaternion identity
        {
            get { return new Quaternion(0, 0, 0, 1); }
        }

        public static Quaternion AngleAxis(float angleDeg, Vector3 axis)
        {
            double n = Math.Sqrt(axis.x * axis.x + axis.y * axis.y + axis.z * axis.z);
            if (n < 1e-12) return identity;
            double half = angleDeg * Math.PI / 360.0;
            double s = Math.Sin(half) / n;
            return new Quaternion((float)(axis.x * s), (float)(axis.y * s), (float)(axis.z * s), (float)Math.Cos(half));
        }

        /// <summary>Unity: rotates z degrees about z, then x degrees about x, then y degrees about y.</summary>
        public static Quaternion Euler(float x, float y, float z)
        {
            return AngleAxis(y, Vector3.up) * AngleAxis(x, Vector3.right) * AngleAxis(z, Vector3.forward);
        }

        public static Quaternion Euler(Vector3 e)
        {
            return Euler(e.x, e.y, e.z);
        }

        public static Quaternion Inverse(Quaternion q)
        {
            return new Quaternion(-q.x, -q.y, -q.z, q.w);
        }

        public static Quaternion operator *(Quaternion a, Quaternion b)
        {
            return new Quaternion(
                a.w * b.x + a.x * b.w + a.y * b.z - a.z * b.y,
                a.w * b.y - a.x * b.z + a.y * b.w + a.z * b.x,
                a.w * b.z + a.x * b.y - a.y * b.x + a.z * b.w,
                a.w * b.w - a.x * b.x - a.y * b.y - a.z * b.z);
        }

        public static Vector3 operator *(Quaternion q, Vector3 v)
        {
            var p = new Quaternion(v.x, v.y, v.z, 0);
            var r = q * p * Inverse(q);
            return new Vector3(r.x, r.y, r.z);
        }

        public override string ToString()
        {
            return string.Format("({0:F4}, {1:F4}, {2:F4}, {3:F4})", x, y, z, w);
        }
    }

    public static class Mathf
    {
        public const float Rad2Deg = 57.29578f;
        public const float Deg2Rad = 0.01745329f;
        public const float PI = 3.1415927f;

        public static float Clamp(float v, float lo, float hi)
        {
            return v < lo ? lo : (v > hi ? hi : v);
        }

        public static int Clamp(int v, int lo, int hi)
        {
            return v < lo ? lo : (v > hi ? hi : v);
        }

        public static float Clamp01(float v)
        {
            return Clamp(v, 0f, 1f);
        }

        public static float Max(float a, float b)
        {
            return a > b ? a : b;
        }

        public static int Max(int a, int b)
        {
            return a > b ? a : b;
        }

        public static float Min(float a, float b)
        {
            return a < b ? a : b;
        }

        public static int Min(int a, int b)
        {
            return a < b ? a : b;
        }

        public static float Abs(float v)
        {
            return Math.Abs(v);
        }

        public static int RoundToInt(float v)
        {
            return (int)Math.Round(v);
        }

        public static int CeilToInt(float v)
        {
            return (int)Math.Ceiling(v);
        }
    }
}
