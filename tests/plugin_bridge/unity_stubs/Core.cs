// Minimal UnityEngine stubs for compiling and console-testing the a2llm Unity package with mono (no Unity here).
// Only what plugin_bridge/unity uses, with just enough behaviour for tests/plugin_bridge/unity_console.
// Test-only hooks are `internal` (visible to the console test through InternalsVisibleTo), so the package Runtime
// cannot depend on them: it compiles against the public surface only, as it would against the real UnityEngine.
using System;
using System.Collections.Generic;
using System.Reflection;
using System.Runtime.CompilerServices;

[assembly: InternalsVisibleTo("A2LLMUnityConsoleTest")]

namespace UnityEngine
{
    public class Object
    {
        public string name = "";

        public static void Destroy(Object obj)
        {
            if (obj == null) return;
            var go = obj as GameObject;
            if (go != null)
            {
                foreach (var c in go.Components.ToArray()) Lifecycle.Call(c, "OnDestroy");
                go.Components.Clear();
            }
        }

        public static implicit operator bool(Object obj)
        {
            return !ReferenceEquals(obj, null);
        }
    }

    public class Component : Object
    {
        public GameObject gameObject { get; internal set; }

        public Transform transform
        {
            get { return gameObject != null ? gameObject.transform : null; }
        }

        public T GetComponent<T>() where T : Component
        {
            return gameObject != null ? gameObject.GetComponent<T>() : null;
        }
    }

    public class Behaviour : Component
    {
        public bool enabled = true;
        public bool isActiveAndEnabled
        {
            get { return enabled; }
        }
    }

    public class MonoBehaviour : Behaviour
    {
    }

    public sealed class Transform : Component
    {
        public Quaternion localRotation = Quaternion.identity;
        public Vector3 localPosition;
    }

    public sealed class GameObject : Object
    {
        internal readonly List<Component> Components = new List<Component>();
        public readonly Transform transform;

        public GameObject(string name)
        {
            this.name = name;
            transform = new Transform();
            transform.gameObject = this;
            Components.Add(transform);
        }

        public T AddComponent<T>() where T : Component, new()
        {
            var c = new T();
            c.gameObject = this;
            Components.Add(c);
            return c;
        }

        public T GetComponent<T>() where T : Component
        {
            foreach (var c in Components)
            {
                var t = c as T;
                if (t != null) return t;
            }
            return null;
        }
    }

    public class ScriptableObject : Object
    {
        public static T CreateInstance<T>() where T : ScriptableObject, new()
        {
            var so = new T();
            Lifecycle.Call(so, "Awake");
            Lifecycle.Call(so, "OnEnable");
            return so;
        }
    }

    /// <summary>Test hook: calls a Unity message method (Awake, Start, Update, OnDestroy...) like the engine does.</summary>
    internal static class Lifecycle
    {
        internal static bool Call(object target, string method, params object[] args)
        {
            var m = target.GetType().GetMethod(method, BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic);
            if (m == null) return false;
            m.Invoke(target, args);
            return true;
        }
    }

    public static class Debug
    {
        internal static int Warnings;
        internal static int Errors;

        public static void Log(object message)
        {
            Console.WriteLine("[Log] " + message);
        }

        public static void LogWarning(object message)
        {
            Warnings++;
            Console.WriteLine("[Warning] " + message);
        }

        public static void LogError(object message)
        {
            Errors++;
            Console.WriteLine("[Error] " + message);
        }
    }

    public static class Time
    {
        internal static float TestTime;
        internal static float TestDeltaTime = 1f / 60f;

        public static float time
        {
            get { return TestTime; }
        }

        public static float deltaTime
        {
            get { return TestDeltaTime; }
        }

        public static float unscaledTime
        {
            get { return TestTime; }
        }
    }

    public static class Application
    {
        public static bool isPlaying
        {
            get { return true; }
        }
    }

    public enum KeyCode
    {
        None = 0,
        Space = 32,
        T = 116,
    }

    public static class Input
    {
        internal static readonly HashSet<KeyCode> Down = new HashSet<KeyCode>();
        internal static readonly HashSet<KeyCode> Held = new HashSet<KeyCode>();
        internal static readonly HashSet<KeyCode> Up = new HashSet<KeyCode>();

        public static bool GetKeyDown(KeyCode key)
        {
            return Down.Contains(key);
        }

        public static bool GetKey(KeyCode key)
        {
            return Held.Contains(key);
        }

        public static bool GetKeyUp(KeyCode key)
        {
            return Up.Contains(key);
        }
    }

    // --- attributes (no behaviour) ---------------------------------------------------------------------------------
    [AttributeUsage(AttributeTargets.Field)]
    public sealed class SerializeField : Attribute
    {
    }

    [AttributeUsage(AttributeTargets.Field)]
    public sealed class HideInInspector : Attribute
    {
    }

    public class PropertyAttribute : Attribute
    {
    }

    [AttributeUsage(AttributeTargets.Field)]
    public sealed class TooltipAttribute : PropertyAttribute
    {
        public TooltipAttribute(string tooltip)
        {
        }
    }

    [AttributeUsage(AttributeTargets.Field, AllowMultiple = true)]
    public sealed class HeaderAttribute : PropertyAttribute
    {
        public HeaderAttribute(string header)
        {
        }
    }

    [AttributeUsage(AttributeTargets.Field)]
    public sealed class TextAreaAttribute : PropertyAttribute
    {
        public TextAreaAttribute()
        {
        }

        public TextAreaAttribute(int minLines, int maxLines)
        {
        }
    }

    [AttributeUsage(AttributeTargets.Field)]
    public sealed class RangeAttribute : PropertyAttribute
    {
        public RangeAttribute(float min, float max)
        {
        }
    }

    [AttributeUsage(AttributeTargets.Field)]
    public sealed class MinAttribute : PropertyAttribute
    {
        public MinAttribute(float min)
        {
        }
    }

    [AttributeUsage(AttributeTargets.Class)]
    public sealed class CreateAssetMenuAttribute : Attribute
    {
        public string fileName;
        public string menuName;
        public int order;
    }

    [AttributeUsage(AttributeTargets.Class, AllowMultiple = true)]
    public sealed class RequireComponent : Attribute
    {
        public RequireComponent(Type type)
        {
        }
    }

    [AttributeUsage(AttributeTargets.Class)]
    public sealed class AddComponentMenu : Attribute
    {
        public AddComponentMenu(string menuName)
        {
        }
    }

    [AttributeUsage(AttributeTargets.Class)]
    public sealed class DisallowMultipleComponent : Attribute
    {
    }
}

namespace UnityEngine.Events
{
    public delegate void UnityAction();

    public delegate void UnityAction<T0>(T0 arg0);

    public delegate void UnityAction<T0, T1>(T0 arg0, T1 arg1);

    [Serializable]
    public class UnityEvent
    {
        private readonly List<UnityAction> _calls = new List<UnityAction>();

        public void AddListener(UnityAction call)
        {
            _calls.Add(call);
        }

        public void RemoveListener(UnityAction call)
        {
            _calls.Remove(call);
        }

        public void Invoke()
        {
            foreach (var c in _calls.ToArray()) c();
        }
    }

    [Serializable]
    public class UnityEvent<T0>
    {
        private readonly List<UnityAction<T0>> _calls = new List<UnityAction<T0>>();

        public void AddListener(UnityAction<T0> call)
        {
            _calls.Add(call);
        }

        public void RemoveListener(UnityAction<T0> call)
        {
            _calls.Remove(call);
        }

        public void Invoke(T0 arg0)
        {
            foreach (var c in _calls.ToArray()) c(arg0);
        }
    }

    [Serializable]
    public class UnityEvent<T0, T1>
    {
        private readonly List<UnityAction<T0, T1>> _calls = new List<UnityAction<T0, T1>>();

        public void AddListener(UnityAction<T0, T1> call)
        {
            _calls.Add(call);
        }

        public void RemoveListener(UnityAction<T0, T1> call)
        {
            _calls.Remove(call);
        }

        public void Invoke(T0 arg0, T1 arg1)
        {
            foreach (var c in _calls.ToArray()) c(arg0, arg1);
        }
    }
}
