// A2LLMAvatar: talks to the a2llm bridge server through the native core and drives a face.
//
// Threads (ARCHITECTURE principle 9): the native core receives on its own I/O thread; this component publishes on
// the game thread only (Update: events, blend shapes, head) and pulls audio on Unity's audio thread
// (OnAudioFilterRead, which touches no Unity API). Units convert at the boundary: microphone rate -> 16 kHz PCM16
// in, 24 kHz answer audio -> AudioSettings.outputSampleRate out, curves [0, 1] -> blend shape weights [0, 100],
// Live Link head radians -> a Unity rotation (A2LLMCurves.HeadRotation).
//
// A/V sync: the audio callback records the core's playhead (answer samples played) and when it was read; Update
// estimates the playhead for this instant (the samples in the buffer just handed to Unity start sounding after
// outputLatencyMs), and asks the core for the interpolated face at that sample (a2llm_client_face_frame_at).
using System;
using System.Collections.Generic;
using System.Diagnostics;
using UnityEngine;
using UnityEngine.Events;
using Debug = UnityEngine.Debug;

namespace A2LLM
{
    [Serializable]
    public class A2LLMTextEvent : UnityEvent<string>
    {
    }

    /// <summary>(turn id, status: 0 completed, 1 cancelled, 2 failed)</summary>
    [Serializable]
    public class A2LLMTurnEvent : UnityEvent<int, int>
    {
    }

    [Serializable]
    public class A2LLMErrorEvent : UnityEvent<int, string>
    {
    }

    [Serializable]
    public class A2LLMConfigEvent : UnityEvent<int, bool>
    {
    }

    /// <summary>(turn id) of a hands-free utterance or of the answer a barge-in cancelled.</summary>
    [Serializable]
    public class A2LLMSpeechEvent : UnityEvent<int>
    {
    }

    [AddComponentMenu("A2LLM/A2LLM Avatar")]
    [RequireComponent(typeof(AudioSource))]
    [DisallowMultipleComponent]
    public sealed class A2LLMAvatar : MonoBehaviour
    {
        [Header("Server")]
        [Tooltip("ZeroMQ endpoint of `python -m plugin_bridge.serve`")]
        public string serverEndpoint = "tcp://127.0.0.1:5555";

        public bool connectOnStart = true;
        public A2LLMClientSettings clientSettings = new A2LLMClientSettings();

        [Header("Character (protocol version 2)")]
        [Tooltip("Persona, voice and default emotion; sent at Connect and kept across reconnects. Edit, then ApplyCharacter()")]
        public A2LLMCharacter character = new A2LLMCharacter();

        [TextArea(2, 5)]
        [Tooltip("The game's situation, used from the next turn on (SetGameContext to change it while playing)")]
        public string gameContext = "";

        [Tooltip("Stream the microphone continuously: the server detects speech start/end and barge-in. Needs echo " +
                 "cancellation or a headset, or the character's voice interrupts itself")]
        public bool handsFree;

        [Header("Face")]
        public SkinnedMeshRenderer faceRenderer;

        [Tooltip("ARKit curve -> blend shape names; empty = identity mapping")]
        public A2LLMBlendShapeMap blendShapeMap;

        [Tooltip("Optional: rotated by the Live Link HeadYaw/HeadPitch/HeadRoll curves")]
        public Transform headTransform;

        [Tooltip("The head bone's rest orientation relative to the face frame (+z out of the face, +y up), Euler degrees")]
        public Vector3 headBoneAxes;

        [Range(0f, 2f)]
        public float headRotationScale = 1f;

        [Header("Audio")]
        [Tooltip("Microphone device (empty = default)")]
        public string microphoneDevice = "";

        [Tooltip("Output latency of Unity's audio (ms) for lip sync; -1 = one DSP buffer")]
        public int outputLatencyMs = -1;

        [Range(0f, 2f)]
        public float volume = 1f;

        [Header("Events (raised on the main thread)")]
        public UnityEvent onConnected = new UnityEvent();
        public A2LLMTextEvent onText = new A2LLMTextEvent();
        public A2LLMTurnEvent onTurnEnd = new A2LLMTurnEvent();
        public A2LLMTurnEvent onPlaybackFinished = new A2LLMTurnEvent();
        public A2LLMErrorEvent onError = new A2LLMErrorEvent();
        public A2LLMSpeechEvent onSpeechStarted = new A2LLMSpeechEvent();
        public A2LLMSpeechEvent onSpeechEnded = new A2LLMSpeechEvent();
        public A2LLMSpeechEvent onBargeIn = new A2LLMSpeechEvent();
        /// <summary>(acked kind: 12 character, 15 context, 17 emotion; true when a new persona reset the conversation)</summary>
        public A2LLMConfigEvent onConfigApplied = new A2LLMConfigEvent();

        /// <summary>C# events (main thread), beside the UnityEvents.</summary>
        public event Action Connected;
        public event Action<string> TextReceived;
        public event Action<A2LLMEvent> TurnEnded;
        public event Action<A2LLMEvent> EventReceived; // every event, including Audio and Face notifications

        public int maxEventsPerFrame = 512;

        private A2LLMClient _client;
        private A2LLMMicrophone _mic;
        private AudioSource _source;
        private A2LLMBlendShapeMap _defaultMap;
        private List<A2LLMBlendShapeMap.Binding> _bindings = new List<A2LLMBlendShapeMap.Binding>();
        private int _faceLayout;
        private int _headYaw = -1, _headPitch = -1, _headRoll = -1;
        private readonly float[] _curves = new float[64];
        private Quaternion _headRest = Quaternion.identity;
        private bool _talking;
        private bool _streaming; // hands-free: the microphone streams MicAudio
        private int _talkTurn; // the turn of the utterance being spoken (0 until its first piece was sent)
        private int _currentTurn;
        private AudioClip _silentClip; // created once: a new clip per Connect would leak one per reconnect
        private bool _answerPending; // utterance ended, its TurnEnd not received yet
        private uint _playingTurn;
        private readonly Dictionary<uint, int> _turnStatus = new Dictionary<uint, int>();

        // audio thread state
        private volatile A2LLMClient _audioClient;
        private A2LLMResampler _resampler;
        private int _outputRate;
        private float[] _answer = new float[8192]; // 24 kHz samples pulled per callback
        private float[] _mono = new float[8192]; // output-rate samples per callback
        private readonly object _clockLock = new object();
        private ulong _clockPlayhead; // core playhead after the last read
        private int _clockPlayed; // samples the last read moved it
        private long _clockTicks; // Stopwatch ticks at the last read
        private bool _clockValid;
        private static readonly Stopwatch Clock = Stopwatch.StartNew();

        /// <summary>The answer sample the face was last sampled at, and the flags the core returned.</summary>
        public ulong LastFaceSample { get; private set; }
        public int LastFaceFlags { get; private set; }
        public int LastFaceValues { get; private set; }

        public bool IsConnected
        {
            get { return _client != null && _client.IsReady; }
        }

        public bool IsTalking
        {
            get { return _talking; }
        }

        /// <summary>Hands-free: the microphone is streaming to the server.</summary>
        public bool IsStreamingMicrophone
        {
            get { return _streaming; }
        }

        /// <summary>Hands-free: the server heard the player start an utterance and not yet its end.</summary>
        public bool PlayerSpeaking { get; private set; }

        public A2LLMClient Client
        {
            get { return _client; }
        }

        /// <summary>Last curves applied (layout LastFaceLayout, LastFaceValues of them).</summary>
        public float[] LastCurves
        {
            get { return _curves; }
        }

        public int LastFaceLayout
        {
            get { return _faceLayout; }
        }

        private void Awake()
        {
            _source = GetComponent<AudioSource>();
            _outputRate = AudioSettings.outputSampleRate;
            _resampler = new A2LLMResampler(A2LLMClient.AnswerSampleRate, _outputRate);
            if (headTransform != null) _headRest = headTransform.localRotation;
            _mic = new A2LLMMicrophone();
        }

        private void Start()
        {
            if (connectOnStart) Connect();
        }

        /// <summary>Connects (returns at once; onConnected fires when the server's Welcome arrives).</summary>
        public void Connect()
        {
            Disconnect();
            _client = new A2LLMClient(serverEndpoint, clientSettings);
            try
            {
                // stored by the core and sent after the Welcome (and again after any reconnect)
                _client.SetCharacter(character);
                if (!string.IsNullOrEmpty(gameContext)) _client.SetGameContext(gameContext);
            }
            catch (A2LLMException e)
            {
                Debug.LogWarning("A2LLM: character not applied: " + e.Message);
                onError.Invoke(e.Status, e.Message);
            }
            if (_source != null)
            {
                // A silent looping clip keeps the source (and so OnAudioFilterRead) running; the filter writes the answer.
                if (_silentClip == null) _silentClip = AudioClip.Create("A2LLM answer", _outputRate, 1, _outputRate, false);
                _source.clip = _silentClip;
                _source.loop = true;
                _source.Play();
            }
            _audioClient = _client;
        }

        public void Disconnect()
        {
            StopTalking(false);
            StopHandsFree();
            _audioClient = null; // the audio thread stops using it; Dispose waits for a call in flight
            if (_client != null)
            {
                _client.Dispose();
                _client = null;
            }
            lock (_clockLock) _clockValid = false;
        }

        // --- game characters (protocol version 2) -------------------------------------------------------------
        /// <summary>Sends the (edited) character fields. A new persona starts a new conversation.</summary>
        public void ApplyCharacter()
        {
            if (_client == null) throw new InvalidOperationException("not connected");
            _client.SetCharacter(character);
        }

        /// <summary>The game's situation for the next turns; does not reset the conversation. "" clears it.</summary>
        public void SetGameContext(string text)
        {
            gameContext = text ?? "";
            if (_client != null) _client.SetGameContext(gameContext);
        }

        /// <summary>The emotion (a name from EmotionNames, intensity 0..1) for the session or only the next turn.</summary>
        public void SetEmotion(string emotionName, float intensity, bool nextTurnOnly = false)
        {
            if (_client == null) throw new InvalidOperationException("not connected");
            _client.SetEmotion(emotionName, intensity, nextTurnOnly);
            if (!nextTurnOnly)
            {
                character.emotion = emotionName;
                character.intensity = intensity;
            }
        }

        /// <summary>A typed turn (chat box, accessibility): interrupts a playing answer; returns the turn id.</summary>
        public int SendText(string text)
        {
            if (_client == null) throw new InvalidOperationException("not connected");
            if (_playingTurn != 0 || _answerPending) CancelAnswer(); // barge-in
            int turn = _client.SendText(text);
            _currentTurn = turn;
            _answerPending = true;
            return turn;
        }

        /// <summary>The server's voices (for a picker), empty before it said which.</summary>
        public string[] VoiceNames
        {
            get { return _client != null ? _client.Voices() : new string[0]; }
        }

        public string[] EmotionNames
        {
            get { return _client != null ? _client.Emotions() : new string[0]; }
        }

        /// <summary>Hands-free on: the microphone streams continuously once connected (push-to-talk is off meanwhile).</summary>
        public void StartHandsFree()
        {
            handsFree = true;
            if (_client == null || _streaming || !_client.IsReady) return; // Connected starts it
            StopTalking(false);
            _mic.Start(string.IsNullOrEmpty(microphoneDevice) ? null : microphoneDevice);
            _streaming = true;
        }

        public void StopHandsFree()
        {
            handsFree = false;
            if (!_streaming) return;
            _streaming = false;
            PlayerSpeaking = false;
            _mic.Stop();
            try
            {
                if (_client != null) _client.SendMic(new short[0], 0, A2LLMClient.InputSampleRate, true); // END_OF_STREAM
            }
            catch (A2LLMException)
            {
                // not connected any more: nothing to end
            }
        }

        private void StreamMicrophone()
        {
            short[] pcm;
            int n = _mic.Read(out pcm);
            if (n <= 0) return;
            try
            {
                _client.SendMic(pcm, n, A2LLMClient.InputSampleRate, false);
            }
            catch (A2LLMException e)
            {
                Debug.LogWarning("A2LLM: hands-free microphone not sent: " + e.Message);
                if (e.Status == A2LLMNative.ErrUnsupported)
                {
                    StopHandsFree(); // a version 1 server: push-to-talk only
                    handsFree = false;
                }
            }
        }

        /// <summary>Push-to-talk pressed: interrupts the answer being played (barge-in) and starts the microphone.</summary>
        public void BeginTalking()
        {
            if (_client == null || _talking) return;
            if (_streaming)
            {
                Debug.LogWarning("A2LLM: hands-free is on; push-to-talk is off until StopHandsFree()");
                return;
            }
            if (_playingTurn != 0 || _answerPending) CancelAnswer(); // barge-in
            _mic.Start(string.IsNullOrEmpty(microphoneDevice) ? null : microphoneDevice);
            _talking = true;
            _talkTurn = 0;
        }

        /// <summary>Push-to-talk released: sends the rest of the utterance and ends it; the answer follows.</summary>
        public void EndTalking()
        {
            StopTalking(true);
        }

        /// <summary>Sends an utterance that did not come from the microphone (mono samples at sampleRate).</summary>
        public int SendUtterance(float[] samples, int count, int sampleRate, bool endOfUtterance)
        {
            if (_client == null) throw new InvalidOperationException("not connected");
            int turn = _client.SendAudio(samples, count, sampleRate, endOfUtterance);
            _currentTurn = turn;
            if (endOfUtterance) _answerPending = true;
            return turn;
        }

        /// <summary>Stops the current answer now (here and on the server).</summary>
        public void CancelAnswer()
        {
            if (_client != null) _client.Cancel();
            _answerPending = false;
        }

        private void StopTalking(bool send)
        {
            if (!_talking) return;
            _talking = false;
            if (send && _client != null)
            {
                SendMicrophone(); // what is left
                try
                {
                    _currentTurn = _client.SendAudio(new short[0], 0, A2LLMClient.InputSampleRate, true);
                    _answerPending = true;
                }
                catch (A2LLMException e)
                {
                    // ErrRefused: the server already ended this utterance (reported by its ERROR event); now closed
                    if (e.Status != A2LLMNative.ErrRefused) Debug.LogWarning("A2LLM: could not end the utterance: " + e.Message);
                }
            }
            _mic.Stop();
        }

        private void SendMicrophone()
        {
            short[] pcm;
            int n = _mic.Read(out pcm);
            if (n <= 0) return;
            try
            {
                _currentTurn = _talkTurn = _client.SendAudio(pcm, n, A2LLMClient.InputSampleRate, false);
            }
            catch (A2LLMException e)
            {
                if (e.Status == A2LLMNative.ErrRefused) UtteranceEndedByServer(e.Message);
                else Debug.LogWarning("A2LLM: microphone audio not sent: " + e.Message);
            }
        }

        /// <summary>The server ended the utterance being spoken (AUDIO_TOO_LONG, or its turn failed). Final: the
        /// microphone stops, the rest is not sent and nothing is retried; the next BeginTalking starts a new turn.</summary>
        private void UtteranceEndedByServer(string why)
        {
            if (!_talking) return;
            _talking = false;
            _mic.Stop();
            _answerPending = false;
            try
            {
                _client.SendAudio(new short[0], 0, A2LLMClient.InputSampleRate, true); // closes it in the core
            }
            catch (A2LLMException)
            {
                // ErrRefused, as expected: nothing was sent
            }
            Debug.LogWarning("A2LLM: the server ended the utterance; talk again to start a new one (" + why + ")");
        }

        private void Update()
        {
            if (_client == null) return;
            if (_talking) SendMicrophone();
            if (_streaming) StreamMicrophone();
            PumpEvents();
            UpdateFace();
            TrackPlayback();
        }

        private void PumpEvents()
        {
            A2LLMEvent ev;
            for (int i = 0; i < maxEventsPerFrame && _client.Poll(out ev); i++)
            {
                switch (ev.Type)
                {
                    case A2LLMEventType.Connected:
                        BindCurves();
                        if (handsFree && !_streaming) StartHandsFree();
                        if (Connected != null) Connected();
                        onConnected.Invoke();
                        break;
                    case A2LLMEventType.SpeechStarted:
                        PlayerSpeaking = true;
                        onSpeechStarted.Invoke((int)ev.TurnId);
                        break;
                    case A2LLMEventType.SpeechEnded: // the hands-free turn starts now; its answer follows
                        PlayerSpeaking = false;
                        _currentTurn = (int)ev.TurnId;
                        _answerPending = true;
                        onSpeechEnded.Invoke((int)ev.TurnId);
                        break;
                    case A2LLMEventType.BargeIn: // the core already faded the answer out
                        if (ev.TurnId == (uint)_currentTurn) _answerPending = false;
                        onBargeIn.Invoke((int)ev.TurnId);
                        break;
                    case A2LLMEventType.ConfigAck:
                        onConfigApplied.Invoke(ev.Code, (ev.Flags & A2LLMNative.AckConversationReset) != 0);
                        break;
                    case A2LLMEventType.TextDelta:
                        if (TextReceived != null) TextReceived(ev.Text);
                        onText.Invoke(ev.Text);
                        break;
                    case A2LLMEventType.TurnEnd:
                        if (_talking && _talkTurn != 0 && ev.TurnId == (uint)_talkTurn)
                            UtteranceEndedByServer("turn " + ev.TurnId + " ended: " + ev.Status);
                        _turnStatus[ev.TurnId] = (int)ev.Status;
                        if (ev.TurnId == (uint)_currentTurn) _answerPending = false;
                        if (TurnEnded != null) TurnEnded(ev);
                        onTurnEnd.Invoke((int)ev.TurnId, (int)ev.Status);
                        break;
                    case A2LLMEventType.Error:
                        Debug.LogWarning("A2LLM server error " + ev.Code + ": " + ev.Text);
                        if (_talking && _talkTurn != 0 && ev.TurnId == (uint)_talkTurn &&
                            (ev.Code == A2LLMNative.ErrorAudioTooLong || ev.Code == A2LLMNative.ErrorTurnFailed))
                            UtteranceEndedByServer(ev.Text);
                        onError.Invoke(ev.Code, ev.Text);
                        break;
                    case A2LLMEventType.Disconnected:
                        Debug.LogWarning("A2LLM: connection lost, reconnecting");
                        if (_streaming)
                        {
                            _streaming = false; // restarted (at sample 0) by the next Connected
                            _mic.Stop();
                        }
                        break;
                }
                if (EventReceived != null) EventReceived(ev);
            }
        }

        /// <summary>Resolves the face bindings from the Welcome's curve names (static data, sent once).</summary>
        private void BindCurves()
        {
            int[] granted = _client.GrantedLayouts();
            _faceLayout = 0;
            foreach (int want in new[] { A2LLMNative.LayoutLiveLink61, A2LLMNative.LayoutArkit52 })
                if (Array.IndexOf(granted, want) >= 0 && _faceLayout == 0) _faceLayout = want;
            _bindings.Clear();
            _headYaw = _headPitch = _headRoll = -1;
            if (_faceLayout == 0)
            {
                Debug.LogWarning("A2LLM: the server granted no ARKit/Live Link face layout");
                return;
            }
            string[] names = _client.CurveNames(_faceLayout);
            _headYaw = Array.IndexOf(names, "HeadYaw");
            _headPitch = Array.IndexOf(names, "HeadPitch");
            _headRoll = Array.IndexOf(names, "HeadRoll");
            if (faceRenderer == null || faceRenderer.sharedMesh == null) return;
            var map = blendShapeMap;
            if (map == null)
            {
                if (_defaultMap == null) _defaultMap = A2LLMBlendShapeMap.CreateDefault();
                map = _defaultMap;
            }
            var problems = new List<string>();
            _bindings = map.Resolve(faceRenderer.sharedMesh, names, problems);
            foreach (var p in problems) Debug.LogWarning("A2LLM blend shape map: " + p);
            if (_bindings.Count == 0) Debug.LogWarning("A2LLM: no ARKit blend shape found on " + faceRenderer.sharedMesh.name);
        }

        /// <summary>The answer sample sounding now (game thread), or PlayheadCurrent before any audio callback.</summary>
        public ulong EstimatePlayhead()
        {
            ulong playhead, start;
            long ticks;
            lock (_clockLock)
            {
                if (!_clockValid) return A2LLMNative.PlayheadCurrent;
                playhead = _clockPlayhead;
                start = playhead - (ulong)_clockPlayed;
                ticks = _clockTicks;
            }
            double elapsed = (double)(Clock.ElapsedTicks - ticks) / Stopwatch.Frequency;
            int latencyMs = outputLatencyMs >= 0 ? outputLatencyMs : DefaultLatencyMs();
            double est = start + (elapsed - latencyMs / 1000.0) * A2LLMClient.AnswerSampleRate;
            if (est > playhead) est = playhead;
            if (est < 0) est = 0;
            return (ulong)est;
        }

        private int DefaultLatencyMs()
        {
            int len, num;
            AudioSettings.GetDSPBufferSize(out len, out num);
            return _outputRate > 0 ? len * 1000 / _outputRate : 0;
        }

        private void UpdateFace()
        {
            if (_faceLayout == 0) return;
            ulong at = EstimatePlayhead();
            int layout = _faceLayout, flags;
            int n = _client.FaceFrameAt(at, _curves, ref layout, out flags);
            if (n <= 0) return;
            LastFaceSample = at;
            LastFaceFlags = flags;
            LastFaceValues = n;
            if (faceRenderer != null) A2LLMBlendShapeMap.Apply(faceRenderer, _bindings, _curves, n);
            if (headTransform != null && _headYaw >= 0 && _headPitch >= 0 && _headRoll >= 0 && _headRoll < n)
            {
                var face = A2LLMCurves.HeadRotation(_curves[_headYaw] * headRotationScale,
                    _curves[_headPitch] * headRotationScale, _curves[_headRoll] * headRotationScale);
                headTransform.localRotation = A2LLMCurves.HeadRotationForBone(_headRest, Quaternion.Euler(headBoneAxes), face);
            }
        }

        private void TrackPlayback()
        {
            uint turn;
            _client.PlaybackPosition(out turn);
            if (_playingTurn != 0 && turn != _playingTurn)
            {
                int status;
                if (!_turnStatus.TryGetValue(_playingTurn, out status)) status = (int)A2LLMTurnStatus.Completed;
                onPlaybackFinished.Invoke((int)_playingTurn, status);
                _turnStatus.Remove(_playingTurn);
            }
            _playingTurn = turn;
        }

        /// <summary>Unity audio thread: pulls 24 kHz answer audio from the core, resamples it to the output rate and
        /// writes it into every channel. Touches no Unity API.</summary>
        private void OnAudioFilterRead(float[] data, int channels)
        {
            var client = _audioClient;
            if (client == null || channels <= 0)
            {
                Array.Clear(data, 0, data.Length);
                return;
            }
            try
            {
                int frames = data.Length / channels;
                if (_mono.Length < frames) _mono = new float[frames];
                int need = _resampler.InputNeededFor(frames);
                if (_answer.Length < need) _answer = new float[need * 2];
                int played = need > 0 ? client.ReadAudio(_answer, need) : 0;
                uint turn;
                ulong playhead = client.PlaybackPosition(out turn); // this turn's samples played
                _resampler.Push(_answer, 0, need);
                int got = _resampler.Produce(_mono, 0, frames);
                float gain = volume;
                for (int f = 0, i = 0; f < frames; f++)
                {
                    float s = f < got ? _mono[f] * gain : 0f;
                    for (int c = 0; c < channels; c++) data[i++] = s;
                }
                lock (_clockLock)
                {
                    _clockPlayhead = playhead;
                    _clockPlayed = (int)Math.Min((ulong)played, playhead);
                    _clockTicks = Clock.ElapsedTicks;
                    _clockValid = true;
                }
            }
            catch (Exception)
            {
                Array.Clear(data, 0, data.Length); // never throw on the audio thread
            }
        }

        private void OnDestroy()
        {
            Disconnect();
            if (_silentClip != null)
            {
                Destroy(_silentClip);
                _silentClip = null;
            }
        }

        private void OnApplicationQuit()
        {
            Disconnect();
        }
    }
}
