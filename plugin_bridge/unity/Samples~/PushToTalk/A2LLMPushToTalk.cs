// Sample: hold a key to talk to the avatar; the answer text goes to the console (and an optional callback).
// Put it on the GameObject that has the A2LLMAvatar (with its AudioSource and face renderer set up).
using A2LLM;
using UnityEngine;

namespace A2LLM.Samples
{
    [RequireComponent(typeof(A2LLMAvatar))]
    public sealed class A2LLMPushToTalk : MonoBehaviour
    {
        public KeyCode talkKey = KeyCode.Space;

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
            if (Input.GetKeyDown(talkKey)) _avatar.BeginTalking();
            if (Input.GetKeyUp(talkKey)) _avatar.EndTalking();
        }
    }
}
