// Sample: hold a key to talk to the avatar; the answer text goes to the console (and an optional callback).
// Put it on the GameObject that has the A2LLMAvatar (with its AudioSource and face renderer set up).
// Input: the Input System package (com.unity.inputsystem, Unity's default for new projects) when it is installed
// (the asmdef defines A2LLM_INPUT_SYSTEM then); the legacy Input Manager otherwise.
using A2LLM;
using UnityEngine;
#if A2LLM_INPUT_SYSTEM
using UnityEngine.InputSystem;
#endif

namespace A2LLM.Samples
{
    [RequireComponent(typeof(A2LLMAvatar))]
    public sealed class A2LLMPushToTalk : MonoBehaviour
    {
#if A2LLM_INPUT_SYSTEM
        public Key talkKey = Key.Space;
#else
        public KeyCode talkKey = KeyCode.Space;
#endif

        private A2LLMAvatar _avatar;
        private string _answer = "";

        private void Awake()
        {
            _avatar = GetComponent<A2LLMAvatar>();
            _avatar.onConnected.AddListener(() => Debug.Log("A2LLM: connected to " + _avatar.serverEndpoint));
            _avatar.onText.AddListener(t => _answer += t);
            _avatar.onTurnEnd.AddListener((turn, status) =>
            {
                Debug.Log("A2LLM answer " + turn + " (" + (A2LLMTurnStatus)status + "): " + _answer);
                _answer = "";
            });
            _avatar.onError.AddListener((code, message) => Debug.LogWarning("A2LLM error " + code + ": " + message));
        }

        private void Update()
        {
            bool down, up;
#if A2LLM_INPUT_SYSTEM
            var keyboard = Keyboard.current; // null when no keyboard is connected
            if (keyboard == null) return;
            down = keyboard[talkKey].wasPressedThisFrame;
            up = keyboard[talkKey].wasReleasedThisFrame;
#else
            down = Input.GetKeyDown(talkKey);
            up = Input.GetKeyUp(talkKey);
#endif
            if (down) _avatar.BeginTalking();
            if (up) _avatar.EndTalking();
        }
    }
}
