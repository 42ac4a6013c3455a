// Golden fixtures through the package's managed codec (A2LLMProtocol): every message in
// plugin_bridge/fixtures/index.json (versions 1 and 2) decodes to its listed fields and header, and re-encodes to the
// same bytes; every malformed file is rejected with exactly its listed ErrorCode. The folder comes from the
// A2LLM_FIXTURES environment variable (tests/plugin_bridge/test_unity.py sets it).
using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Text;
using A2LLM;

namespace A2LLMTests
{
    /// <summary>A minimal JSON reader (objects, arrays, strings with escapes, numbers, true/false/null).</summary>
    internal sealed class Json
    {
        public Dictionary<string, Json> Obj;
        public List<Json> Arr;
        public string Str;
        public double Num;
        public bool Bool;

        public Json this[string key]
        {
            get
            {
                Json v;
                if (Obj == null || !Obj.TryGetValue(key, out v)) throw new KeyNotFoundException(key);
                return v;
            }
        }

        public static Json Parse(string s)
        {
            int i = 0;
            Json v = Value(s, ref i);
            Ws(s, ref i);
            if (i != s.Length) throw new FormatException("trailing JSON at " + i);
            return v;
        }

        private static void Ws(string s, ref int i)
        {
            while (i < s.Length && char.IsWhiteSpace(s[i])) i++;
        }

        private static Json Value(string s, ref int i)
        {
            Ws(s, ref i);
            char c = s[i];
            if (c == '{')
            {
                var o = new Json { Obj = new Dictionary<string, Json>() };
                i++;
                Ws(s, ref i);
                if (s[i] == '}') { i++; return o; }
                for (;;)
                {
                    Ws(s, ref i);
                    string k = Value(s, ref i).Str;
                    Ws(s, ref i);
                    i++; // ':'
                    o.Obj[k] = Value(s, ref i);
                    Ws(s, ref i);
                    if (s[i++] == '}') return o;
                }
            }
            if (c == '[')
            {
                var a = new Json { Arr = new List<Json>() };
                i++;
                Ws(s, ref i);
                if (s[i] == ']') { i++; return a; }
                for (;;)
                {
                    a.Arr.Add(Value(s, ref i));
                    Ws(s, ref i);
                    if (s[i++] == ']') return a;
                }
            }
            if (c == '"')
            {
                var sb = new StringBuilder();
                i++;
                while (s[i] != '"')
                {
                    if (s[i] == '\\')
                    {
                        char e = s[i + 1];
                        i += 2;
                        switch (e)
                        {
                            case 'n': sb.Append('\n'); break;
                            case 't': sb.Append('\t'); break;
                            case 'r': sb.Append('\r'); break;
                            case 'b': sb.Append('\b'); break;
                            case 'f': sb.Append('\f'); break;
                            case 'u':
                                sb.Append((char)int.Parse(s.Substring(i, 4), NumberStyles.HexNumber));
                                i += 4;
                                break;
                            default: sb.Append(e); break;
                        }
                    }
                    else sb.Append(s[i++]);
                }
                i++;
                return new Json { Str = sb.ToString() };
            }
            if (s.Substring(i).StartsWith("true")) { i += 4; return new Json { Bool = true }; }
            if (s.Substring(i).StartsWith("false")) { i += 5; return new Json { Bool = false }; }
            if (s.Substring(i).StartsWith("null")) { i += 4; return new Json(); }
            int start = i;
            while (i < s.Length && "+-0123456789.eE".IndexOf(s[i]) >= 0) i++;
            return new Json { Num = double.Parse(s.Substring(start, i - start), CultureInfo.InvariantCulture) };
        }
    }

    internal static class FixtureTests
    {
        public static void Run(Action<bool, string> check)
        {
            string dir = Environment.GetEnvironmentVariable("A2LLM_FIXTURES");
            check(!string.IsNullOrEmpty(dir) && File.Exists(Path.Combine(dir, "index.json")),
                "A2LLM_FIXTURES names the fixtures folder");
            if (string.IsNullOrEmpty(dir)) return;
            Json index = Json.Parse(File.ReadAllText(Path.Combine(dir, "index.json"), Encoding.UTF8));
            var kinds = new HashSet<int>();
            int decoded = 0, failed = 0;
            foreach (Json e in index["messages"].Arr)
            {
                string file = e["file"].Str;
                byte[] bytes = File.ReadAllBytes(Path.Combine(dir, file));
                var problems = new List<string>();
                try
                {
                    A2LLMMessage m = A2LLMProtocol.Decode(bytes);
                    kinds.Add((int)m.Kind);
                    if ((int)m.Kind != (int)e["kind"].Num || m.Kind.ToString() != e["class"].Str) problems.Add("kind");
                    if (m.HeaderVersion != (int)e["version"].Num) problems.Add("header version");
                    if (m.TurnId != (uint)e["turn_id"].Num || m.Seq != (ulong)e["seq"].Num ||
                        m.SendTimeUs != (ulong)e["send_time_us"].Num) problems.Add("header fields");
                    foreach (var kv in e["fields"].Obj)
                    {
                        string why = CompareField(m, kv.Key, kv.Value);
                        if (why != null) problems.Add(kv.Key + ": " + why);
                    }
                    byte[] again = A2LLMProtocol.Encode(m);
                    if (!again.SequenceEqual(bytes)) problems.Add("re-encoding differs from the fixture");
                }
                catch (A2LLMProtocolException ex)
                {
                    problems.Add("rejected: " + ex.Code + " " + ex.Message);
                }
                decoded++;
                if (problems.Count > 0)
                {
                    failed++;
                    check(false, "fixture " + file + ": " + string.Join("; ", problems.ToArray()));
                }
            }
            check(failed == 0 && decoded >= 28, "C# decodes " + decoded + " golden messages to their fields and re-encodes them byte for byte");
            bool allKinds = true;
            for (int k = 1; k <= (int)A2LLMKind.BargeIn; k++) allKinds &= kinds.Contains(k);
            check(allKinds, "a golden fixture of every kind 1-21 (versions 1 and 2)");

            int rejected = 0, wrong = 0;
            foreach (Json e in index["malformed"].Arr)
            {
                string file = e["file"].Str;
                int want = (int)e["error_code"].Num;
                int got = 0;
                try
                {
                    A2LLMProtocol.Decode(File.ReadAllBytes(Path.Combine(dir, file)));
                }
                catch (A2LLMProtocolException ex)
                {
                    got = ex.Code;
                }
                rejected++;
                if (got != want)
                {
                    wrong++;
                    check(false, "malformed " + file + ": code " + got + ", expected " + want + " (" + e["error_name"].Str + ")");
                }
            }
            check(wrong == 0 && rejected >= 20, "C# rejects " + rejected + " malformed fixtures with their ErrorCode");
        }

        /// <summary>Decoder parity with protocol.py: A2LLM_PARITY_FILE holds u32 count, then per case u32 length, u16 the
        /// code protocol.py gives (0 = accepted), the bytes (tests/plugin_bridge/test_unity.py writes it from mutated
        /// fixtures). Every case must get the same code, and every accepted one must re-encode to the same bytes.</summary>
        public static void Parity(Action<bool, string> check)
        {
            string path = Environment.GetEnvironmentVariable("A2LLM_PARITY_FILE");
            if (string.IsNullOrEmpty(path)) return;
            byte[] blob = File.ReadAllBytes(path);
            int pos = 0;
            Func<int, uint> u32 = at => (uint)(blob[at] | (blob[at + 1] << 8) | (blob[at + 2] << 16) | (blob[at + 3] << 24));
            uint count = u32(pos);
            pos += 4;
            int bad = 0, accepted = 0;
            var firstBad = new List<string>();
            for (uint i = 0; i < count; i++)
            {
                int len = (int)u32(pos);
                int want = blob[pos + 4] | (blob[pos + 5] << 8);
                var msg = new byte[len];
                Array.Copy(blob, pos + 6, msg, 0, len);
                pos += 6 + len;
                int got = 0;
                string why = "";
                try
                {
                    A2LLMMessage m = A2LLMProtocol.Decode(msg);
                    if (!A2LLMProtocol.Encode(m).SequenceEqual(msg)) why = "re-encoding differs";
                }
                catch (A2LLMProtocolException e)
                {
                    got = e.Code;
                    why = e.Message;
                }
                if (got == 0) accepted++;
                if (got != want || (got == 0 && why.Length > 0))
                {
                    bad++;
                    if (firstBad.Count < 5) firstBad.Add("case " + i + ": C# " + got + " (" + why + "), protocol.py " + want);
                }
            }
            check(bad == 0 && accepted > 0, "C# decoder parity with protocol.py: " + count + " cases, " + accepted + " accepted, " +
                bad + " differ" + (firstBad.Count > 0 ? ": " + string.Join("; ", firstBad.ToArray()) : ""));
        }

        private static string Eq(double got, Json want)
        {
            return got == want.Num ? null : "got " + got.ToString("R", CultureInfo.InvariantCulture) + ", want " + want.Num;
        }

        private static string Eq(string got, Json want)
        {
            return got == want.Str ? null : "got '" + got + "', want '" + want.Str + "'";
        }

        private static string Seq(IList<double> got, Json want)
        {
            if (got.Count != want.Arr.Count) return "length " + got.Count + " != " + want.Arr.Count;
            for (int i = 0; i < got.Count; i++)
                if (got[i] != want.Arr[i].Num) return "item " + i + ": " + got[i] + " != " + want.Arr[i].Num;
            return null;
        }

        private static string Names(string[] got, Json want)
        {
            if (got.Length != want.Arr.Count) return "length " + got.Length + " != " + want.Arr.Count;
            for (int i = 0; i < got.Length; i++)
                if (got[i] != want.Arr[i].Str) return "item " + i + ": '" + got[i] + "'";
            return null;
        }

        /// <summary>null when the decoded field equals index.json's value, else why not. Unknown keys fail.</summary>
        private static string CompareField(A2LLMMessage m, string k, Json v)
        {
            switch (k)
            {
                case "min_version": return Eq(m.MinVersion, v);
                case "max_version": return Eq(m.MaxVersion, v);
                case "capabilities": return Eq(m.Capabilities, v);
                case "client_name": return Eq(m.ClientName, v);
                case "server_name": return Eq(m.ServerName, v);
                case "layouts":
                    if (m.Kind == A2LLMKind.Hello) return Seq(m.LayoutIds.Select(x => (double)x).ToList(), v);
                    if (m.Layouts.Length != v.Arr.Count) return "layout count";
                    for (int i = 0; i < m.Layouts.Length; i++)
                    {
                        if (m.Layouts[i].LayoutId != (int)v.Arr[i]["layout_id"].Num) return "layout id";
                        string why = Names(m.Layouts[i].Names, v.Arr[i]["names"]);
                        if (why != null) return why;
                    }
                    return null;
                case "version": return Eq(m.Version, v);
                case "session_id": return Eq(m.SessionId, v);
                case "heartbeat_ms": return Eq(m.HeartbeatMs, v);
                case "session_timeout_ms": return Eq(m.SessionTimeoutMs, v);
                case "input_sample_rate": return Eq(m.InputSampleRate, v);
                case "output_sample_rate": return Eq(m.OutputSampleRate, v);
                case "max_payload": return Eq(m.MaxPayload, v);
                case "fps": return Eq(m.Fps, v);
                case "samples":
                    return Seq(m.Pcm16 != null ? m.Pcm16.Select(x => (double)x).ToList() : m.F32.Select(x => (double)x).ToList(), v);
                case "sample_rate": return Eq(m.SampleRate, v);
                case "sample_offset": return Eq(m.SampleOffset, v);
                case "end_of_utterance": return m.EndOfUtterance == v.Bool ? null : "differs";
                case "end_of_stream": return m.EndOfStream == v.Bool ? null : "differs";
                case "byte_offset": return Eq(m.ByteOffset, v);
                case "text": return Eq(m.Text, v);
                case "first_frame": return Eq(m.FirstFrame, v);
                case "layout_id": return Eq(m.LayoutId, v);
                case "values":
                {
                    if (m.NumFrames != v.Arr.Count) return "frames " + m.NumFrames + " != " + v.Arr.Count;
                    var flat = new List<double>();
                    foreach (Json row in v.Arr)
                    {
                        if (row.Arr.Count != m.Dims) return "dims";
                        flat.AddRange(row.Arr.Select(x => x.Num));
                    }
                    var want = new Json { Arr = flat.Select(x => new Json { Num = x }).ToList() };
                    return Seq(m.Values.Select(x => (double)x).ToList(), want);
                }
                case "status": return Eq(m.Status, v);
                case "ttft_s": return Eq(m.TtftS, v);
                case "ttfa_s": return Eq(m.TtfaS, v);
                case "first_audio_s": return Eq(m.FirstAudioS, v);
                case "rtf": return Eq(m.Rtf, v);
                case "total_s": return Eq(m.TotalS, v);
                case "text_bytes": return Eq(m.TextBytes, v);
                case "text_deltas": return Eq(m.TextDeltas, v);
                case "audio_samples": return Eq(m.AudioSamples, v);
                case "audio_chunks": return Eq(m.AudioChunks, v);
                case "face_frames": return Eq(m.FaceFrames, v);
                case "time_us": return Eq(m.TimeUs, v);
                case "echo_us": return Eq(m.EchoUs, v);
                case "code": return Eq(m.Code, v);
                case "message": return Eq(m.Message, v);
                // version 2
                case "emotion_modes": return Eq(m.EmotionModes, v);
                case "intensity": return Eq(m.Intensity, v);
                case "voice": return Eq(m.Voice, v);
                case "emotion": return Eq(m.Emotion, v);
                case "persona": return Eq(m.Persona, v);
                case "scope": return Eq(m.Scope, v);
                case "name": return Eq(m.Name, v);
                case "max_persona_chars": return Eq(m.MaxPersonaChars, v);
                case "max_context_chars": return Eq(m.MaxContextChars, v);
                case "max_text_chars": return Eq(m.MaxTextChars, v);
                case "vad_min_speech_ms": return Eq(m.VadMinSpeechMs, v);
                case "vad_min_silence_ms": return Eq(m.VadMinSilenceMs, v);
                case "vad_barge_in_ms": return Eq(m.VadBargeInMs, v);
                case "mic_rates": return Seq(m.MicRates.Select(x => (double)x).ToList(), v);
                case "voices": return Names(m.Voices, v);
                case "emotions": return Names(m.Emotions, v);
                case "acked_kind": return Eq(m.AckedKind, v);
                case "flags": return Eq(m.Flags, v);
                case "start_sample": return Eq(m.StartSample, v);
                case "end_sample": return Eq(m.EndSample, v);
                case "detected_sample": return Eq(m.DetectedSample, v);
                case "speech_sample": return Eq(m.SpeechSample, v);
                case "reason": return Eq(m.Reason, v);
                default: return "unknown field in index.json";
            }
        }
    }
}
