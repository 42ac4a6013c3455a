// Managed wrapper over the native client core: one connection to the a2llm bridge server.
// Threading (from a2llm_client.h): the core's own I/O thread receives; Poll has ONE consumer (the game thread);
// ReadAudio is for the audio thread; FaceFrameAt, Send*, Cancel, State, Stats are thread-safe. Dispose waits until
// no other thread is inside a call, so an audio callback racing with OnDestroy never touches a freed client.
using System;
using System.Threading;

namespace A2LLM
{
    public sealed class A2LLMException : Exception
    {
        public readonly int Status;

        public A2LLMException(int status, string message) : base(message + " (status " + status + ")")
        {
            Status = status;
        }
    }

    /// <summary>Connection settings (defaults are the core's defaults).</summary>
    [Serializable]
    public sealed class A2LLMClientSettings
    {
        public string clientName = "a2llm-unity";
        public uint capabilities = A2LLMNative.CapText | A2LLMNative.CapAudio | A2LLMNative.CapFace;
        /// <summary>Face layouts wanted, in preference order (1 FLAME58, 2 ARKIT52, 3 LIVELINK61).</summary>
        public int[] layouts = { A2LLMNative.LayoutLiveLink61, A2LLMNative.LayoutArkit52 };
        public uint jitterTargetMs = 100;
        public uint outputLatencyMs;
        public uint eventQueueCapacity = 1024;
        /// <summary>Idle face frames between turns (blinks, saccades, breathing, listening; protocol version 2).</summary>
        public bool idleFace = true;
        /// <summary>Highest protocol version to offer: 0 = the highest (2); 1 = version 1 only.</summary>
        public uint maxVersion;
        /// <summary>ZeroMQ CURVE keys (Z85), only when the server is not on loopback.</summary>
        public string curveServerKey;
        public string curvePublicKey;
        public string curveSecretKey;
    }

    /// <summary>A game character (protocol version 2): persona, voice, default emotion. Empty strings = the server's
    /// defaults (its default persona, its first voice, neutral).</summary>
    [Serializable]
    public sealed class A2LLMCharacter
    {
        [UnityEngine.TextArea(3, 10)]
        [UnityEngine.Tooltip("The character's system prompt (a changed persona starts a new conversation)")]
        public string persona = "";

        [UnityEngine.Tooltip("A voice name from the server's list (A2LLMClient.Voices); empty = the default voice")]
        public string voice = "";

        [UnityEngine.Tooltip("Default emotion: neutral, happy, sad, angry, surprised, afraid, disgusted, ... (the server's list)")]
        public string emotion = "";

        [UnityEngine.Range(0f, 1f)]
        public float intensity;

        [UnityEngine.Tooltip("The emotion as an instruction in the prompt: speech and face follow it (A2-LLM)")]
        public bool emotionInPrompt = true;

        [UnityEngine.Tooltip("The emotion as a bounded offset/gain on the ARKit face, blended over 300 ms (Audio2Face)")]
        public bool emotionOnFace = true;
    }

    /// <summary>One event from the core, copied out of native memory (text decoded; audio and face values stay in
    /// the core's audio ring and jitter buffer: read them with ReadAudio / FaceFrameAt).</summary>
    public struct A2LLMEvent
    {
        public A2LLMEventType Type;
        public uint TurnId;
        public string Text;
        public ulong SampleOffset;
        public int NumSamples;
        public int SampleRate;
        public ulong FirstFrame;
        public int NumFrames;
        public int Dims;
        public int LayoutId;
        public float Fps;
        public int Code;
        public uint SessionId;
        public A2LLMTurnStatus Status;
        public float TtftS;        // TTFT (A2-LLM 6.1): end of the question -> first generated audio token (s, -1 = none)
        public float TtfaS;        // TTFA (A2-LLM 6.1): -> first generated facial motion frame
        public float FirstAudioS;  // extra: -> the server sent the first AudioChunk
        public float Rtf;          // RTF (A2-LLM 6.1): generation time / duration of the synthesized speech
        public float TotalS;
        public ulong AudioSamples;
        public uint FaceFrames;
        // version 2: SpeechStarted / SpeechEnded / BargeIn (mic stream offsets at its own rate), ConfigAck
        public ulong StartSample;
        public ulong EndSample;
        public ulong DetectedSample;
        public int Reason; // SpeechEnded: 0 silence, 1 max length, 2 end of stream
        public uint Flags; // ConfigAck: AckConversationReset

        /// <summary>A hands-free turn (started by the server's voice-activity detector).</summary>
        public bool IsServerTurn
        {
            get { return (TurnId & A2LLMNative.ServerTurnBit) != 0; }
        }

        public override string ToString()
        {
            return string.Format("{0} turn={1} text={2} samples={3}@{4} frames={5}x{6} code={7} status={8}", Type,
                TurnId, Text, NumSamples, SampleOffset, NumFrames, Dims, Code, Status);
        }
    }

    public enum A2LLMEventType
    {
        None = 0,
        Connected = 1,
        TextDelta = 2,
        Audio = 3,
        Face = 4,
        TurnEnd = 5,
        Error = 6,
        Disconnected = 7,
        ServerInfo = 8,
        ConfigAck = 9,
        SpeechStarted = 10,
        SpeechEnded = 11,
        BargeIn = 12,
    }

    public enum A2LLMTurnStatus
    {
        Completed = 0,
        Cancelled = 1,
        Failed = 2,
    }

    public sealed class A2LLMClient : IDisposable
    {
        private IntPtr _handle;
        private int _inUse; // calls in flight (any thread)
        private volatile bool _disposed;
        private IntPtr _name, _serverKey, _publicKey, _secretKey; // kept alive until Dispose

        /// <summary>Output sample rate of answer audio (the Welcome's; the protocol's is 24 kHz).</summary>
        public const int AnswerSampleRate = 24000;

        /// <summary>User audio sample rate the server expects.</summary>
        public const int InputSampleRate = 16000;

        /// <summary>Connects to endpoint (e.g. "tcp://127.0.0.1:5555"); returns at once, state Connecting.</summary>
        public A2LLMClient(string endpoint, A2LLMClientSettings settings = null)
        {
            if (string.IsNullOrEmpty(endpoint)) throw new ArgumentException("endpoint is empty");
            if (settings == null) settings = new A2LLMClientSettings();
            uint abi = A2LLMNative.a2llm_abi_version();
            if (abi != A2LLMNative.AbiVersion)
                throw new A2LLMException(A2LLMNative.ErrInternal,
                    "native core ABI " + abi + " != package ABI " + A2LLMNative.AbiVersion);

            var opts = new A2LLMNative.ClientOptions();
            A2LLMNative.a2llm_client_options_init(ref opts);
            opts.capabilities = settings.capabilities | (settings.idleFace ? A2LLMNative.CapIdleFace : 0u);
            opts.max_version = settings.maxVersion;
            int[] lay = settings.layouts ?? new int[0];
            if (lay.Length > 4) throw new ArgumentException("at most 4 layouts");
            opts.n_layouts = (uint)lay.Length;
            opts.layout0 = lay.Length > 0 ? (byte)lay[0] : (byte)0;
            opts.layout1 = lay.Length > 1 ? (byte)lay[1] : (byte)0;
            opts.layout2 = lay.Length > 2 ? (byte)lay[2] : (byte)0;
            opts.layout3 = lay.Length > 3 ? (byte)lay[3] : (byte)0;
            opts.jitter_target_ms = settings.jitterTargetMs;
            opts.output_latency_ms = settings.outputLatencyMs;
            opts.event_queue_capacity = settings.eventQueueCapacity;
            _name = A2LLMNative.Utf8.Alloc(settings.clientName);
            _serverKey = A2LLMNative.Utf8.Alloc(string.IsNullOrEmpty(settings.curveServerKey) ? null : settings.curveServerKey);
            _publicKey = A2LLMNative.Utf8.Alloc(string.IsNullOrEmpty(settings.curvePublicKey) ? null : settings.curvePublicKey);
            _secretKey = A2LLMNative.Utf8.Alloc(string.IsNullOrEmpty(settings.curveSecretKey) ? null : settings.curveSecretKey);
            opts.client_name = _name;
            opts.curve_server_key = _serverKey;
            opts.curve_public_key = _publicKey;
            opts.curve_secret_key = _secretKey;

            IntPtr ep = A2LLMNative.Utf8.Alloc(endpoint);
            try
            {
                _handle = A2LLMNative.a2llm_client_create(ep, ref opts);
            }
            finally
            {
                A2LLMNative.Utf8.Free(ep);
            }
            if (_handle == IntPtr.Zero)
            {
                string why = A2LLMNative.LastError();
                FreeStrings();
                throw new A2LLMException(A2LLMNative.ErrNetwork, "a2llm_client_create(" + endpoint + ") failed: " + why);
            }
        }

        public static string NativeVersion
        {
            get { return A2LLMNative.Utf8.FromNative(A2LLMNative.a2llm_version()); }
        }

        public bool IsDisposed
        {
            get { return _disposed; }
        }

        // --- guarded entry: any thread may call; Dispose waits for calls in flight -----------------------------------
        private bool Enter()
        {
            Interlocked.Increment(ref _inUse);
            if (_disposed)
            {
                Interlocked.Decrement(ref _inUse);
                return false;
            }
            return true;
        }

        private void Exit()
        {
            Interlocked.Decrement(ref _inUse);
        }

        private static int Check(int status, string what)
        {
            if (status < 0) throw new A2LLMException(status, what + ": " + A2LLMNative.LastError());
            return status;
        }

        /// <summary>0 Connecting, 1 Ready, 2 Closed.</summary>
        public int State
        {
            get
            {
                if (!Enter()) return A2LLMNative.StateClosed;
                try { return A2LLMNative.a2llm_client_state(_handle); }
                finally { Exit(); }
            }
        }

        public bool IsReady
        {
            get { return State == A2LLMNative.StateReady; }
        }

        /// <summary>Blocks until the Welcome (true) or timeout (false). Do not call on the game thread in a game.</summary>
        public bool WaitReady(int timeoutMs)
        {
            if (!Enter()) return false;
            try
            {
                int s = A2LLMNative.a2llm_client_wait_ready(_handle, timeoutMs);
                if (s == A2LLMNative.ErrTimeout) return false;
                Check(s, "wait_ready");
                return true;
            }
            finally { Exit(); }
        }

        /// <summary>Sends count PCM16 mono samples of the player's utterance; returns the turn id.</summary>
        public int SendAudio(short[] samples, int count, int sampleRate, bool endOfUtterance)
        {
            if (count < 0 || count > (samples == null ? 0 : samples.Length)) throw new ArgumentOutOfRangeException("count");
            if (!Enter()) throw new ObjectDisposedException("A2LLMClient");
            try
            {
                return Check(A2LLMNative.a2llm_client_send_audio_pcm16(_handle, samples ?? new short[0], (uint)count,
                    (uint)sampleRate, endOfUtterance ? 1 : 0), "send_audio_pcm16");
            }
            finally { Exit(); }
        }

        /// <summary>Sends count float32 mono samples (finite, [-1, 1]) of the player's utterance; returns the turn id.</summary>
        public int SendAudio(float[] samples, int count, int sampleRate, bool endOfUtterance)
        {
            if (count < 0 || count > (samples == null ? 0 : samples.Length)) throw new ArgumentOutOfRangeException("count");
            if (!Enter()) throw new ObjectDisposedException("A2LLMClient");
            try
            {
                return Check(A2LLMNative.a2llm_client_send_audio_f32(_handle, samples ?? new float[0], (uint)count,
                    (uint)sampleRate, endOfUtterance ? 1 : 0), "send_audio_f32");
            }
            finally { Exit(); }
        }

        /// <summary>Barge-in: stop the current answer here and on the server.</summary>
        public void Cancel()
        {
            if (!Enter()) return;
            try { Check(A2LLMNative.a2llm_client_cancel(_handle), "cancel"); }
            finally { Exit(); }
        }

        /// <summary>Takes the next event (single consumer: the game thread). False when there is none.</summary>
        public bool Poll(out A2LLMEvent ev)
        {
            ev = default(A2LLMEvent);
            if (!Enter()) return false;
            try
            {
                A2LLMNative.Event raw;
                int r = Check(A2LLMNative.a2llm_client_poll(_handle, out raw), "poll");
                if (r == 0) return false;
                ev.Type = (A2LLMEventType)raw.type;
                ev.TurnId = raw.turn_id;
                ev.Text = raw.text != IntPtr.Zero ? A2LLMNative.Utf8.FromNative(raw.text, (int)raw.text_len) : null;
                ev.SampleOffset = raw.sample_offset;
                ev.NumSamples = (int)raw.n_samples;
                ev.SampleRate = (int)raw.sample_rate;
                ev.FirstFrame = raw.first_frame;
                ev.NumFrames = (int)raw.n_frames;
                ev.Dims = (int)raw.dims;
                ev.LayoutId = raw.layout_id;
                ev.Fps = raw.fps;
                ev.Code = raw.code;
                ev.SessionId = raw.session_id;
                ev.Status = (A2LLMTurnStatus)raw.status;
                ev.TtftS = raw.ttft_s;
                ev.TtfaS = raw.ttfa_s;
                ev.FirstAudioS = raw.first_audio_s;
                ev.Rtf = raw.rtf;
                ev.TotalS = raw.total_s;
                ev.AudioSamples = raw.audio_samples;
                ev.FaceFrames = raw.face_frames;
                ev.StartSample = raw.start_sample;
                ev.EndSample = raw.end_sample;
                ev.DetectedSample = raw.detected_sample;
                ev.Reason = raw.reason;
                ev.Flags = raw.flags;
                return true;
            }
            finally { Exit(); }
        }

        // --- game characters (protocol version 2) ---------------------------------------------------------------
        /// <summary>Negotiated protocol version (1 or 2), 0 before the Welcome.</summary>
        public int SessionVersion
        {
            get
            {
                if (!Enter()) return 0;
                try { return A2LLMNative.a2llm_client_session_version(_handle); }
                finally { Exit(); }
            }
        }

        /// <summary>Sets the character (kept by the core and re-sent after a reconnect). Throws A2LLMException
        /// (ErrInvalidArgument: unknown voice/emotion, persona too long, ...; ErrUnsupported: a version 1 server).</summary>
        public void SetCharacter(A2LLMCharacter c)
        {
            if (c == null) throw new ArgumentNullException("c");
            if (!Enter()) throw new ObjectDisposedException("A2LLMClient");
            var ch = new A2LLMNative.Character();
            IntPtr persona = IntPtr.Zero, voice = IntPtr.Zero, emotion = IntPtr.Zero;
            try
            {
                A2LLMNative.a2llm_character_init(ref ch);
                ch.emotion_modes = (c.emotionInPrompt ? A2LLMNative.EmotionPrompt : 0u) | (c.emotionOnFace ? A2LLMNative.EmotionFace : 0u);
                ch.intensity = c.intensity;
                ch.persona = persona = A2LLMNative.Utf8.Alloc(c.persona ?? "");
                ch.voice = voice = A2LLMNative.Utf8.Alloc(c.voice ?? "");
                ch.emotion = emotion = A2LLMNative.Utf8.Alloc(c.emotion ?? "");
                Check(A2LLMNative.a2llm_client_set_character(_handle, ref ch), "set_character");
            }
            finally
            {
                A2LLMNative.Utf8.Free(persona);
                A2LLMNative.Utf8.Free(voice);
                A2LLMNative.Utf8.Free(emotion);
                Exit();
            }
        }

        /// <summary>The game's situation for the next turns ("The player just lost the battle."); "" clears it.
        /// Does not reset the conversation.</summary>
        public void SetGameContext(string text)
        {
            if (!Enter()) throw new ObjectDisposedException("A2LLMClient");
            IntPtr p = A2LLMNative.Utf8.Alloc(text ?? "");
            try { Check(A2LLMNative.a2llm_client_set_context(_handle, p), "set_context"); }
            finally
            {
                A2LLMNative.Utf8.Free(p);
                Exit();
            }
        }

        /// <summary>The emotion for the session, or only for the next turn (nextTurnOnly).</summary>
        public void SetEmotion(string name, float intensity, bool nextTurnOnly = false)
        {
            if (!Enter()) throw new ObjectDisposedException("A2LLMClient");
            IntPtr p = A2LLMNative.Utf8.Alloc(name ?? "");
            try
            {
                Check(A2LLMNative.a2llm_client_set_emotion(_handle, p, intensity,
                    nextTurnOnly ? A2LLMNative.ScopeNextTurn : A2LLMNative.ScopeSession), "set_emotion");
            }
            finally
            {
                A2LLMNative.Utf8.Free(p);
                Exit();
            }
        }

        /// <summary>A typed turn, answered like an utterance; returns its turn id.</summary>
        public int SendText(string text)
        {
            if (!Enter()) throw new ObjectDisposedException("A2LLMClient");
            IntPtr p = A2LLMNative.Utf8.Alloc(text ?? "");
            try { return Check(A2LLMNative.a2llm_client_send_text(_handle, p), "send_text"); }
            finally
            {
                A2LLMNative.Utf8.Free(p);
                Exit();
            }
        }

        /// <summary>Hands-free: the next piece of the continuous microphone stream (PCM16 mono at a server mic rate).</summary>
        public void SendMic(short[] samples, int count, int sampleRate, bool endOfStream)
        {
            if (count < 0 || count > (samples == null ? 0 : samples.Length)) throw new ArgumentOutOfRangeException("count");
            if (!Enter()) throw new ObjectDisposedException("A2LLMClient");
            try
            {
                Check(A2LLMNative.a2llm_client_send_mic_pcm16(_handle, samples ?? new short[0], (uint)count, (uint)sampleRate,
                    endOfStream ? 1 : 0), "send_mic_pcm16");
            }
            finally { Exit(); }
        }

        /// <summary>The server's limits, mic rates, voice and emotion counts; false before its ServerInfo (or v1).</summary>
        public bool GetServerInfo(out A2LLMNative.ServerInfo info)
        {
            info = new A2LLMNative.ServerInfo();
            if (!Enter()) return false;
            try { return Check(A2LLMNative.a2llm_client_server_info(_handle, out info), "server_info") == 1; }
            finally { Exit(); }
        }

        /// <summary>The server's voice names (the first is the default); empty before ServerInfo.</summary>
        public string[] Voices()
        {
            return Names(true);
        }

        /// <summary>The server's emotion names (neutral first); empty before ServerInfo.</summary>
        public string[] Emotions()
        {
            return Names(false);
        }

        private string[] Names(bool voices)
        {
            A2LLMNative.ServerInfo info;
            if (!GetServerInfo(out info)) return new string[0];
            if (!Enter()) return new string[0];
            try
            {
                var n = (int)(voices ? info.n_voices : info.n_emotions);
                var names = new string[n];
                for (int i = 0; i < n; i++)
                    names[i] = A2LLMNative.Utf8.FromNative(voices ? A2LLMNative.a2llm_client_voice_name(_handle, i)
                        : A2LLMNative.a2llm_client_emotion_name(_handle, i));
                return names;
            }
            finally { Exit(); }
        }

        public A2LLMNative.Stats GetStats()
        {
            var s = new A2LLMNative.Stats();
            if (!Enter()) return s;
            try { Check(A2LLMNative.a2llm_client_stats(_handle, out s), "stats"); }
            finally { Exit(); }
            return s;
        }

        /// <summary>Audio thread: fills output[0..n) with 24 kHz mono answer audio (silence where there is none);
        /// returns how far the playhead moved (answer samples played). Never blocks on the network.</summary>
        public int ReadAudio(float[] output, int n)
        {
            if (n < 0 || n > output.Length) throw new ArgumentOutOfRangeException("n");
            if (!Enter())
            {
                Array.Clear(output, 0, n);
                return 0;
            }
            try { return Check(A2LLMNative.a2llm_client_read_audio(_handle, output, n), "read_audio"); }
            finally { Exit(); }
        }

        /// <summary>Samples played so far of the playing turn; turnId 0 when idle.</summary>
        public ulong PlaybackPosition(out uint turnId)
        {
            turnId = 0;
            if (!Enter()) return 0;
            try { return A2LLMNative.a2llm_client_playback_position(_handle, out turnId); }
            finally { Exit(); }
        }

        /// <summary>The face at answer sample samplesPlayed (or A2LLMNative.PlayheadCurrent), interpolated.
        /// layoutId: in the wanted layout (0 = first granted), out the layout written. Returns the number of values
        /// written, 0 when no frame of that layout has arrived yet.</summary>
        public int FaceFrameAt(ulong samplesPlayed, float[] curves, ref int layoutId, out int flags)
        {
            flags = A2LLMNative.FrameIdle;
            if (!Enter()) return 0;
            try
            {
                return Check(A2LLMNative.a2llm_client_face_frame_at(_handle, samplesPlayed, curves, curves.Length,
                    ref layoutId, out flags), "face_frame_at");
            }
            finally { Exit(); }
        }

        /// <summary>Layout ids granted by the Welcome (empty before it).</summary>
        public int[] GrantedLayouts()
        {
            if (!Enter()) return new int[0];
            try
            {
                var buf = new int[8];
                int n = Check(A2LLMNative.a2llm_client_layouts(_handle, buf, buf.Length), "layouts");
                var res = new int[Math.Min(n, buf.Length)];
                Array.Copy(buf, res, res.Length);
                return res;
            }
            finally { Exit(); }
        }

        /// <summary>Curve names of a granted layout, from the Welcome's static data (empty if not granted).</summary>
        public string[] CurveNames(int layoutId)
        {
            if (!Enter()) return new string[0];
            try
            {
                int n = Check(A2LLMNative.a2llm_client_curve_count(_handle, layoutId), "curve_count");
                var names = new string[n];
                for (int i = 0; i < n; i++)
                    names[i] = A2LLMNative.Utf8.FromNative(A2LLMNative.a2llm_client_curve_name(_handle, layoutId, i));
                return names;
            }
            finally { Exit(); }
        }

        public void Dispose()
        {
            if (_disposed) return;
            _disposed = true;
            var spin = new SpinWait();
            while (Interlocked.CompareExchange(ref _inUse, 0, 0) != 0) spin.SpinOnce();
            if (_handle != IntPtr.Zero)
            {
                A2LLMNative.a2llm_client_destroy(_handle);
                _handle = IntPtr.Zero;
            }
            FreeStrings();
            GC.SuppressFinalize(this);
        }

        ~A2LLMClient()
        {
            // The finalizer thread never races with callers (no references remain), so destroy is safe here.
            if (_handle != IntPtr.Zero) A2LLMNative.a2llm_client_destroy(_handle);
            FreeStrings();
        }

        private void FreeStrings()
        {
            A2LLMNative.Utf8.Free(_name);
            A2LLMNative.Utf8.Free(_serverKey);
            A2LLMNative.Utf8.Free(_publicKey);
            A2LLMNative.Utf8.Free(_secretKey);
            _name = _serverKey = _publicKey = _secretKey = IntPtr.Zero;
        }
    }
}
