// Console test of the a2llm Unity package, run with mono against the UnityEngine stubs (tests/plugin_bridge/unity_stubs)
// and the native core (build/native). Usage:
//   mono A2LLMUnityConsoleTest.exe                  unit tests + ABI checks (no server)
//   mono A2LLMUnityConsoleTest.exe tcp://127.0.0.1:PORT   ... + the live turn against `python -m plugin_bridge.serve`
// Prints one line per check; exit code 0 when all pass. The live part drives the real A2LLMAvatar component: Awake /
// Start / Update on this (the "game") thread, OnAudioFilterRead on a separate "audio" thread, like Unity does.
using System;
using System.Collections.Generic;
using System.Runtime.InteropServices;
using System.Threading;
using A2LLM;
using UnityEngine;

namespace A2LLMTests
{
    internal static class Program
    {
        private static int _failures;
        private static int _checks;

        private static void Check(bool ok, string what)
        {
            _checks++;
            if (!ok) _failures++;
            Console.WriteLine((ok ? "PASS " : "FAIL ") + what);
        }

        private static int Main(string[] args)
        {
            try
            {
                UnitTests.Run(Check);
                FixtureTests.Run(Check);
                FixtureTests.Parity(Check);
                bool native = args.Length == 0 || args[0] != "--unit-only";
                if (native) AbiTests.Run(Check);
                if (args.Length > 0 && args[0].StartsWith("tcp://")) LiveTest.Run(args[0], Check);
            }
            catch (Exception e)
            {
                Console.WriteLine("FAIL unexpected exception: " + e);
                _failures++;
            }
            Console.WriteLine(string.Format("{0} checks, {1} failed", _checks, _failures));
            return _failures == 0 ? 0 : 1;
        }
    }

    /// <summary>The C ABI round trips through the package's own A2LLMNative / A2LLMClient classes.</summary>
    internal static class AbiTests
    {
        public static void Run(Action<bool, string> check)
        {
            check(A2LLMNative.a2llm_abi_version() == A2LLMNative.AbiVersion, "abi version matches the package");
            check(A2LLMNative.a2llm_protocol_version() == A2LLMNative.ProtocolVersion, "protocol version 2");
            string version = A2LLMClient.NativeVersion;
            check(!string.IsNullOrEmpty(version) && version.Split('.').Length == 3, "native version string '" + version + "'");
            check(A2LLMNative.a2llm_layout_dims(A2LLMNative.LayoutFlame58) == 58, "layout dims flame58");
            check(A2LLMNative.a2llm_layout_dims(A2LLMNative.LayoutArkit52) == 52, "layout dims arkit52");
            check(A2LLMNative.a2llm_layout_dims(A2LLMNative.LayoutLiveLink61) == 61, "layout dims livelink61");
            check(A2LLMNative.a2llm_layout_dims(99) == 0, "layout dims unknown = 0");

            if (IntPtr.Size == 8)
            {
                check(Marshal.SizeOf(typeof(A2LLMNative.Event)) == 160, "sizeof(a2llm_event) == 160");
                check(Marshal.SizeOf(typeof(A2LLMNative.Character)) == 40, "sizeof(a2llm_character) == 40");
                check(Marshal.SizeOf(typeof(A2LLMNative.ServerInfo)) == 68, "sizeof(a2llm_server_info) == 68");
                check(Marshal.SizeOf(typeof(A2LLMNative.ClientOptions)) == 72, "sizeof(a2llm_client_options) == 72");
                check(Marshal.SizeOf(typeof(A2LLMNative.Stats)) == 104, "sizeof(a2llm_stats) == 104");
            }
            var opts = new A2LLMNative.ClientOptions();
            A2LLMNative.a2llm_client_options_init(ref opts);
            check(opts.struct_size == (uint)Marshal.SizeOf(typeof(A2LLMNative.ClientOptions)),
                "options_init writes struct_size = Marshal.SizeOf (" + opts.struct_size + ")");
            check(opts.capabilities == 7 && opts.n_layouts == 1 && opts.layout0 == A2LLMNative.LayoutArkit52 &&
                  opts.jitter_target_ms == 100 && opts.event_queue_capacity == 1024,
                "options defaults (caps 7, layouts {ARKIT52}, jitter 100 ms, queue 1024)");

            var ch = new A2LLMNative.Character();
            A2LLMNative.a2llm_character_init(ref ch);
            check(ch.struct_size == (uint)Marshal.SizeOf(typeof(A2LLMNative.Character)) && ch.emotion_modes == 3,
                "character_init writes struct_size and both emotion modes");

            bool threw = false;
            string message = "";
            try
            {
                using (new A2LLMClient("nonsense://endpoint"))
                {
                }
            }
            catch (A2LLMException e)
            {
                threw = true;
                message = e.Message;
            }
            check(threw && message.Length > 40, "a bad endpoint fails with the core's message: " + message);

            // UTF-8 by hand: a non-ASCII round trip through unmanaged memory.
            const string s = "héllo – 世界";
            IntPtr p = A2LLMNative.Utf8.Alloc(s);
            string back = A2LLMNative.Utf8.FromNative(p);
            A2LLMNative.Utf8.Free(p);
            check(back == s, "UTF-8 marshalling round trip");

            // A client that never connects: thread-safe calls answer sensibly, Dispose is prompt and idempotent.
            var c = new A2LLMClient("tcp://127.0.0.1:9", new A2LLMClientSettings { clientName = "ünïcode client" });
            check(c.State == A2LLMNative.StateConnecting, "state CONNECTING before a Welcome");
            check(!c.WaitReady(50), "wait_ready times out without a server");
            bool notConnected = false;
            try
            {
                c.SendAudio(new short[160], 160, 16000, false);
            }
            catch (A2LLMException e)
            {
                notConnected = e.Status == A2LLMNative.ErrNotConnected;
            }
            check(notConnected, "send before the Welcome -> NOT_CONNECTED");
            var buf = new float[480];
            buf[0] = 1f;
            int played = c.ReadAudio(buf, buf.Length);
            check(played == 0 && buf[0] == 0f, "read_audio while idle writes silence, playhead does not move");
            check(c.GrantedLayouts().Length == 0 && c.CurveNames(3).Length == 0, "no static data before the Welcome");
            c.Dispose();
            c.Dispose();
            check(c.State == A2LLMNative.StateClosed && c.ReadAudio(buf, 10) == 0, "calls after Dispose are harmless");
        }
    }

    /// <summary>One real turn through the A2LLMAvatar component against the live Python server.</summary>
    internal static class LiveTest
    {
        private const int OutputRate = 48000;
        private const int Channels = 2;
        private const int DspFrames = 1024;
        private const double PlaybackSpeed = 2.0; // simulated audio device runs at 2x real time

        /// <summary>The player holds push-to-talk past the server's 60 s limit: the server's AUDIO_TOO_LONG is final.
        /// The avatar stops the microphone and sends nothing more of that utterance (no flood of refused pieces, no
        /// retry); releasing the key is harmless; the next utterance is a new turn that completes.</summary>
        private static void TooLongUtterance(A2LLMAvatar avatar, Action<bool, string> check)
        {
            var codes = new List<int>();
            var ends = new List<A2LLMEvent>();
            UnityEngine.Events.UnityAction<int, string> onError = (code, msg) => codes.Add(code);
            avatar.onError.AddListener(onError);
            avatar.TurnEnded += e => ends.Add(e);
            avatar.BeginTalking();
            long micSamples = 0;
            var second = new float[48000];
            int seconds = 0;
            var deadline = DateTime.UtcNow.AddSeconds(60);
            while (avatar.IsTalking && seconds < 90 && DateTime.UtcNow < deadline)
            {
                for (int i = 0; i < second.Length; i++, micSamples++)
                    second[i] = 0.2f * (float)Math.Sin(2 * Math.PI * 200 * micSamples / 48000.0);
                Microphone.TestRecord(second);
                Lifecycle.Call(avatar, "Update");
                seconds++;
                if (seconds >= 61) Thread.Sleep(20); // past the limit: give the server time to answer
            }
            check(!avatar.IsTalking && codes.Contains(A2LLMNative.ErrorAudioTooLong),
                "AUDIO_TOO_LONG stops the microphone (after " + seconds + " s of speech)");
            var sentAtStop = avatar.Client.GetStats().messages_sent;
            for (int k = 0; k < 5; k++) // the player still holds the key: audio keeps arriving at the microphone
            {
                Microphone.TestRecord(second);
                Lifecycle.Call(avatar, "Update");
                Thread.Sleep(20);
            }
            avatar.EndTalking(); // key released: nothing to send
            for (int k = 0; k < 25; k++)
            {
                Lifecycle.Call(avatar, "Update");
                Thread.Sleep(20);
            }
            var sentAfter = avatar.Client.GetStats().messages_sent;
            check(sentAfter - sentAtStop <= 1, "nothing of the refused utterance is sent or re-sent (" +
                (sentAfter - sentAtStop) + " messages after the stop, a heartbeat at most)");
            int others = 0;
            foreach (int c in codes) if (c != A2LLMNative.ErrorAudioTooLong) others++;
            check(others == 0, "no further errors for the refused utterance (" + string.Join(",", codes) + ")");

            avatar.BeginTalking();
            Microphone.TestRecord(new float[14400]);
            Lifecycle.Call(avatar, "Update");
            avatar.EndTalking();
            deadline = DateTime.UtcNow.AddSeconds(30);
            while (DateTime.UtcNow < deadline && (ends.Count == 0 || ends[ends.Count - 1].Status != A2LLMTurnStatus.Completed))
            {
                Lifecycle.Call(avatar, "Update");
                Thread.Sleep(10);
            }
            check(ends.Count >= 1 && ends[ends.Count - 1].Status == A2LLMTurnStatus.Completed,
                "the next utterance is a new turn and completes (turn " + (ends.Count > 0 ? ends[ends.Count - 1].TurnId : 0) + ")");
            avatar.onError.RemoveListener(onError);
        }

        /// <summary>Protocol version 2 through the component: the server's emotion list, a character and a game context
        /// (each acknowledged), a refused unknown emotion (checked by the core, nothing sent), a typed turn answered.</summary>
        private static void CharacterTurn(A2LLMAvatar avatar, Action<bool, string> check)
        {
            check(avatar.Client.SessionVersion == 2, "protocol version 2 negotiated");
            string[] emotions = avatar.EmotionNames;
            check(emotions.Length >= 7 && emotions[0] == "neutral", "the server's emotions (" + string.Join(",", emotions) + ")");
            var acks = new List<int>();
            UnityEngine.Events.UnityAction<int, bool> onAck = (kind, reset) => acks.Add(kind);
            avatar.onConfigApplied.AddListener(onAck);
            var ends = new List<A2LLMEvent>();
            avatar.TurnEnded += e => ends.Add(e);
            avatar.character.persona = "You are Brokk, the gruff dwarven smith of Ironhold.";
            avatar.character.emotion = emotions[1];
            avatar.character.intensity = 0.5f;
            avatar.ApplyCharacter();
            avatar.SetGameContext("The player just lost the battle.");
            int refused = 0;
            try
            {
                avatar.SetEmotion("no-such-emotion", 0.5f);
            }
            catch (A2LLMException e)
            {
                refused = e.Status;
            }
            check(refused == A2LLMNative.ErrInvalidArgument, "an unknown emotion is refused by the core (" + refused + ")");
            int turn = avatar.SendText("How much for the sword?");
            var deadline = DateTime.UtcNow.AddSeconds(60);
            while (DateTime.UtcNow < deadline && !ends.Exists(e => e.TurnId == (uint)turn))
            {
                Lifecycle.Call(avatar, "Update");
                Thread.Sleep(10);
            }
            check(acks.Contains(12) && acks.Contains(15), "character and game context applied (" + string.Join(",", acks) + ")");
            var end = ends.Find(e => e.TurnId == (uint)turn);
            check(end.TurnId == (uint)turn && end.Status == A2LLMTurnStatus.Completed && end.AudioSamples > 0,
                "a typed turn is answered with speech (turn " + turn + ", " + end.AudioSamples + " samples)");
            avatar.onConfigApplied.RemoveListener(onAck);
        }

        public static void Run(string endpoint, Action<bool, string> check)
        {
            AudioSettings.TestOutputSampleRate = OutputRate;
            AudioSettings.TestBufferLength = DspFrames;

            // a rig: ARKit names in mixed case, one renamed shape through the map, plus an unrelated shape
            var go = new GameObject("Avatar");
            go.AddComponent<AudioSource>();
            var face = go.AddComponent<SkinnedMeshRenderer>();
            var shapes = new List<string>();
            foreach (var n in A2LLMCurves.Arkit52)
                if (n != "jawOpen") shapes.Add(n.ToUpperInvariant());
            shapes.Add("Mouth_Open");
            shapes.Add("Unrelated");
            face.sharedMesh = Mesh.TestWithBlendShapes(shapes.ToArray());
            int mouthOpen = face.sharedMesh.GetBlendShapeIndex("Mouth_Open");
            int smileL = face.sharedMesh.GetBlendShapeIndex("MOUTHSMILELEFT");
            int unrelated = face.sharedMesh.GetBlendShapeIndex("Unrelated");
            var head = new GameObject("Head").transform;

            var map = ScriptableObject.CreateInstance<A2LLMBlendShapeMap>();
            map.entries.Add(new A2LLMBlendShapeMap.Entry { arkitName = "JawOpen", blendShapeName = "mouth_open" });

            var avatar = go.AddComponent<A2LLMAvatar>();
            avatar.serverEndpoint = endpoint;
            // exact lip sync against the scripted face: no idle stream, so no crossfade from the idle pose into the
            // answer (PROTOCOL.md 10.9) shifts its first frames
            avatar.clientSettings.idleFace = false;
            avatar.faceRenderer = face;
            avatar.headTransform = head;
            avatar.blendShapeMap = map;
            avatar.outputLatencyMs = 0;

            var texts = new List<string>();
            var turnEnds = new List<A2LLMEvent>();
            int audioEvents = 0, faceEvents = 0, connected = 0, errors = 0, finished = 0;
            avatar.onText.AddListener(t => texts.Add(t));
            avatar.Connected += () => connected++;
            avatar.TurnEnded += e => turnEnds.Add(e);
            avatar.onError.AddListener((code, msg) => errors++);
            avatar.onPlaybackFinished.AddListener((turn, status) => finished++);
            int mainThread = Thread.CurrentThread.ManagedThreadId;
            bool offMainThread = false;
            avatar.EventReceived += e =>
            {
                if (Thread.CurrentThread.ManagedThreadId != mainThread) offMainThread = true;
                if (e.Type == A2LLMEventType.Audio) audioEvents++;
                if (e.Type == A2LLMEventType.Face) faceEvents++;
            };

            Lifecycle.Call(avatar, "Awake");
            Lifecycle.Call(avatar, "Start");
            var deadline = DateTime.UtcNow.AddSeconds(30);
            while (connected == 0 && DateTime.UtcNow < deadline)
            {
                Lifecycle.Call(avatar, "Update");
                Thread.Sleep(5);
            }
            check(connected == 1 && avatar.IsConnected, "connected (Welcome received)");
            check(avatar.LastFaceLayout == A2LLMNative.LayoutLiveLink61, "Live Link 61 layout granted and bound");
            string[] names = avatar.Client.CurveNames(A2LLMNative.LayoutLiveLink61);
            check(names.Length == 61 && string.Join(",", names) == string.Join(",", A2LLMCurves.LiveLink61),
                "Welcome curve names == A2LLMCurves.LiveLink61");

            // push-to-talk: 0.6 s of a 300 Hz tone recorded by the (stub) microphone at 48 kHz, 20 ms per frame
            avatar.BeginTalking();
            check(avatar.IsTalking && Microphone.TestFrequency == 48000, "microphone started at 48 kHz (16 kHz not offered)");
            long micSamples = 0;
            for (int f = 0; f < 30; f++)
            {
                var chunk = new float[960];
                for (int i = 0; i < chunk.Length; i++, micSamples++)
                    chunk[i] = 0.3f * (float)Math.Sin(2 * Math.PI * 300 * micSamples / 48000.0);
                Microphone.TestRecord(chunk);
                Lifecycle.Call(avatar, "Update");
            }
            avatar.EndTalking();

            // the "audio thread": Unity calls OnAudioFilterRead with interleaved stereo buffers at 48 kHz
            var stop = false;
            double sumSq = 0;
            long outSamples = 0;
            float peak = 0;
            var audio = new Thread(() =>
            {
                var data = new float[DspFrames * Channels];
                var sw = System.Diagnostics.Stopwatch.StartNew();
                long frames = 0;
                while (!Volatile.Read(ref stop))
                {
                    Lifecycle.Call(avatar, "OnAudioFilterRead", data, Channels);
                    for (int i = 0; i < data.Length; i += Channels)
                    {
                        if (data[i] != data[i + 1]) throw new Exception("channels differ");
                        sumSq += data[i] * data[i];
                        peak = Math.Max(peak, Math.Abs(data[i]));
                    }
                    outSamples += DspFrames;
                    frames += DspFrames;
                    double due = frames / (OutputRate * PlaybackSpeed);
                    int wait = (int)((due - sw.Elapsed.TotalSeconds) * 1000);
                    if (wait > 0) Thread.Sleep(wait);
                }
            });
            audio.Start();

            // the game loop: Update every ~8 ms; check lip sync against the scripted source's pure function of time
            int syncChecks = 0, syncBad = 0, headChecks = 0, headBad = 0, backwards = 0;
            ulong prevSample = 0;
            float maxMouth = 0, maxSmile = 0;
            double worst = 0;
            deadline = DateTime.UtcNow.AddSeconds(20);
            while (DateTime.UtcNow < deadline && (turnEnds.Count == 0 || finished == 0))
            {
                Lifecycle.Call(avatar, "Update");
                if (avatar.LastFaceValues == 61 && avatar.LastFaceFlags == A2LLMNative.FrameInterpolated &&
                    avatar.LastFaceSample != A2LLMNative.PlayheadCurrent)
                {
                    if (avatar.LastFaceSample < prevSample) backwards++;
                    prevSample = avatar.LastFaceSample;
                    double expected = Scripted.JawOpenAt(avatar.LastFaceSample);
                    double got = face.GetBlendShapeWeight(mouthOpen) / 100.0;
                    double err = Math.Abs(expected - got);
                    worst = Math.Max(worst, err);
                    syncChecks++;
                    if (err > 0.02)
                    {
                        syncBad++;
                        Console.WriteLine(string.Format("  sync: sample {0} expected {1:F4} got {2:F4} playhead {3}",
                            avatar.LastFaceSample, expected, got, avatar.Client.PlaybackPosition(out uint _)));
                    }
                    double yaw = Scripted.HeadYawAt(avatar.LastFaceSample);
                    // rotation about +y only: y = sin(yaw / 2)
                    headChecks++;
                    if (Math.Abs(head.localRotation.y - Math.Sin(yaw / 2)) > 2e-3 || Math.Abs(head.localRotation.x) > 1e-4)
                        headBad++;
                }
                maxMouth = Math.Max(maxMouth, face.GetBlendShapeWeight(mouthOpen));
                maxSmile = Math.Max(maxSmile, face.GetBlendShapeWeight(smileL));
                Thread.Sleep(8);
            }
            Volatile.Write(ref stop, true);
            audio.Join();
            var stats = avatar.Client.GetStats();
            check(stats.messages_sent >= 30, "utterance streamed while talking (" + stats.messages_sent + " messages sent)");

            string text = string.Concat(texts.ToArray());
            check(text.StartsWith("Hello there!"), "text deltas received on the main thread: '" + text + "'");
            check(audioEvents > 0 && faceEvents > 0, "audio (" + audioEvents + ") and face (" + faceEvents + ") events");
            check(!offMainThread, "every event raised on the main thread");
            check(turnEnds.Count == 1 && turnEnds[0].Status == A2LLMTurnStatus.Completed && turnEnds[0].AudioSamples == 48000,
                "one TurnEnd, completed, 48000 answer samples");
            check(finished == 1, "onPlaybackFinished raised once after the answer played");
            check(stats.audio_samples_played == 48000 && stats.underruns == 0,
                "all 2 s of answer audio played through OnAudioFilterRead (" + stats.audio_samples_played + ", underruns " + stats.underruns + ")");
            double rms = Math.Sqrt(sumSq / Math.Max(1, outSamples));
            check(rms > 0.05 && peak <= 0.31f, string.Format("output audio is the scripted tone at 48 kHz (rms {0:F3}, peak {1:F3})", rms, peak));
            check(syncChecks >= 20 && syncBad == 0,
                string.Format("jawOpen on 'Mouth_Open' follows the A/V clock ({0} checks, worst error {1:F4})", syncChecks, worst));
            check(backwards == 0, "the A/V clock never runs backwards within the turn");
            check(headChecks >= 20 && headBad == 0, "head transform follows HeadYaw (" + headChecks + " checks)");
            check(maxMouth > 50f && maxMouth <= 100f && maxSmile > 20f, string.Format("weights in 0..100 (mouth {0:F1}, smile {1:F1})", maxMouth, maxSmile));
            check(face.GetBlendShapeWeight(unrelated) == 0f, "unmapped blend shape untouched");
            check(errors == 0, "no server errors");

            // Reconnect: the silent looping clip is reused, not leaked (one AudioClip per Connect before)
            var source = go.GetComponent<AudioSource>();
            var firstClip = source.clip;
            avatar.Connect();
            check(firstClip != null && ReferenceEquals(source.clip, firstClip), "Connect again reuses the AudioSource clip");
            deadline = DateTime.UtcNow.AddSeconds(30);
            while (connected < 2 && DateTime.UtcNow < deadline)
            {
                Lifecycle.Call(avatar, "Update");
                Thread.Sleep(5);
            }
            check(connected == 2, "reconnected");
            TooLongUtterance(avatar, check);
            CharacterTurn(avatar, check);

            UnityEngine.Object.Destroy(go); // OnDestroy -> Disconnect -> a2llm_client_destroy
            check(avatar.Client == null, "destroyed avatar released its client");
        }
    }

    /// <summary>Values of plugin_bridge.event_source.ScriptedSource (frame k is a pure function of k), sampled the
    /// way the core does (PROTOCOL.md 4.5): frame position = samples * fps / rate, so frame k sits at sample k * 960,
    /// linearly interpolated between neighbours.</summary>
    internal static class Scripted
    {
        private static double JawOpen(long k)
        {
            return 0.5 + 0.5 * Math.Sin(2 * (2 * Math.PI * k / 25.0)) * 0.8;
        }

        private static double HeadYaw(long k)
        {
            return 0.1 * Math.Sin(2 * Math.PI * k / 25.0 / 4);
        }

        private static double At(ulong sample, Func<long, double> f)
        {
            double x = sample / 960.0;
            if (x <= 0) return f(0);
            long k = (long)Math.Floor(x);
            long last = 49; // 2 s at 25 fps
            if (k >= last) return f(last);
            double t = x - k;
            return f(k) * (1 - t) + f(k + 1) * t;
        }

        public static double JawOpenAt(ulong sample)
        {
            return At(sample, JawOpen);
        }

        public static double HeadYawAt(ulong sample)
        {
            return At(sample, HeadYaw);
        }
    }
}
