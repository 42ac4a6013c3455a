// The a2llm wire protocol (versions 1 and 2, plugin_bridge/PROTOCOL.md) in managed C#: a mirror of the reference
// decoder plugin_bridge/protocol.py, check by check in the same order with the same error codes, and an encoder that
// writes the same bytes. The Unity component talks to the server through the native core (A2LLMNative), which has
// its own C++ codec; this one is for managed tools (recording, inspecting or replaying captured sessions, editor
// scripts) and for platforms where the native core cannot run. It never throws anything but A2LLMProtocolException
// on malformed bytes and never reads out of bounds.
//
// Messages use one flat record (A2LLMMessage): the fields of its kind are set, the others keep their defaults.
// Field names follow the spec (and fixtures/index.json) in PascalCase.
using System;
using System.Collections.Generic;
using System.Text;

namespace A2LLM
{
    public enum A2LLMKind : ushort
    {
        Hello = 1,
        Welcome = 2,
        UserAudio = 3,
        TextDelta = 4,
        AudioChunk = 5,
        FaceFrames = 6,
        TurnEnd = 7,
        Cancel = 8,
        Heartbeat = 9,
        Error = 10,
        Bye = 11,
        // version 2 (PROTOCOL.md 10): only with header version >= 2
        Character = 12,
        ServerInfo = 13,
        ConfigAck = 14,
        GameContext = 15,
        UserText = 16,
        SetEmotion = 17,
        MicAudio = 18,
        SpeechStarted = 19,
        SpeechEnded = 20,
        BargeIn = 21,
    }

    /// <summary>Protocol ErrorCodes (PROTOCOL.md 7 and 10.11).</summary>
    public static class A2LLMErrorCode
    {
        public const int BadMagic = 1;
        public const int UnsupportedVersion = 2;
        public const int UnknownKind = 3;
        public const int BadLength = 4;
        public const int PayloadTooLarge = 5;
        public const int NonFinite = 6;
        public const int BadValue = 7;
        public const int BadUtf8 = 8;
        public const int BadFraming = 9;
        public const int NotWelcomed = 20;
        public const int SessionExpired = 21;
        public const int ServerBusy = 22;
        public const int TurnInProgress = 23;
        public const int UnknownTurn = 24;
        public const int ClientTooSlow = 25;
        public const int TurnFailed = 26;
        public const int ShuttingDown = 27;
        public const int AudioTooLong = 28;
        public const int Internal = 39;
        public const int UnknownVoice = 40;
        public const int UnknownEmotion = 41;
        public const int TextTooLong = 42;
        public const int BadText = 43;
        public const int UnsupportedRate = 44;
    }

    public sealed class A2LLMProtocolException : Exception
    {
        public readonly int Code;

        public A2LLMProtocolException(int code, string message) : base(message)
        {
            Code = code;
        }
    }

    public sealed class A2LLMLayoutInfo
    {
        public int LayoutId;
        public string[] Names = new string[0];
    }

    /// <summary>One message (flat record). Header fields first, then the payload fields of every kind.</summary>
    public sealed class A2LLMMessage
    {
        public A2LLMKind Kind = A2LLMKind.Heartbeat;
        /// <summary>Decoded from the header; when encoding, max(HeaderVersion, MinVersion(Kind)) is written.</summary>
        public int HeaderVersion;
        public uint TurnId;
        public ulong Seq;
        public ulong SendTimeUs;

        // Hello
        public int MinVersion = 1, MaxVersion = 1;
        public byte[] LayoutIds = new byte[0];
        // Hello, Welcome
        public uint Capabilities;
        public string ClientName = "", ServerName = "";
        // Welcome
        public int Version = 1;
        public uint SessionId, HeartbeatMs, SessionTimeoutMs, InputSampleRate, OutputSampleRate, MaxPayload;
        public A2LLMLayoutInfo[] Layouts = new A2LLMLayoutInfo[0];
        // Welcome, FaceFrames
        public float Fps;
        // UserAudio, AudioChunk, MicAudio: Pcm16 != null for PCM16, else F32
        public short[] Pcm16;
        public float[] F32 = new float[0];
        public uint SampleRate = 16000;
        public ulong SampleOffset;
        public bool EndOfUtterance; // UserAudio
        public bool EndOfStream; // MicAudio
        // TextDelta (Text), GameContext / UserText (Text), Error (Message)
        public uint ByteOffset;
        public string Text = "";
        // FaceFrames
        public ulong FirstFrame;
        public int LayoutId = 2, Dims, NumFrames;
        public float[] Values = new float[0]; // [NumFrames * Dims] row-major
        // TurnEnd
        public int Status;
        public float TtftS = -1, TtfaS = -1, FirstAudioS = -1, Rtf = -1, TotalS = -1;
        public uint TextBytes, TextDeltas, AudioChunks, FaceFrames;
        public ulong AudioSamples;
        // Heartbeat
        public ulong TimeUs, EchoUs;
        // Error
        public int Code;
        public string Message = "";
        // Character, SetEmotion
        public int EmotionModes = 3;
        public float Intensity;
        public string Voice = "", Emotion = "", Persona = "";
        public int Scope;
        public string Name = ""; // SetEmotion's emotion name
        // ServerInfo
        public uint MaxPersonaChars, MaxContextChars, MaxTextChars, VadMinSpeechMs, VadMinSilenceMs, VadBargeInMs;
        public uint[] MicRates = new uint[0];
        public string[] Voices = new string[0], Emotions = new string[0];
        // ConfigAck
        public int AckedKind;
        public int Flags;
        // SpeechStarted, SpeechEnded, BargeIn (mic stream offsets at the client's rate)
        public ulong StartSample, EndSample, DetectedSample, SpeechSample;
        public int Reason;

        public int NumSamples
        {
            get { return Pcm16 != null ? Pcm16.Length : F32.Length; }
        }
    }

    public static class A2LLMProtocol
    {
        public const int HeaderSize = 32;
        public const int Version1 = 1;
        public const int Version2 = 2;
        public const int MaxVersion = 2;
        public const int MaxPayloadBytes = 4 * 1024 * 1024;
        public const int MaxErrorMessage = 1024;
        public const int MaxName = 255;
        public const uint MinSampleRate = 8000, MaxSampleRate = 192000;
        public const uint ServerTurnBit = 0x80000000u;
        public const int EmotionModePrompt = 1, EmotionModeFace = 2;
        public const int ScopeSession = 0, ScopeNextTurn = 1;

        /// <summary>Values per frame of a face layout wire id (58, 52, 61), 0 if unknown.</summary>
        public static int LayoutDims(int layoutId)
        {
            switch (layoutId)
            {
                case 1: return 58;
                case 2: return 52;
                case 3: return 61;
                default: return 0;
            }
        }

        /// <summary>The lowest header version a kind exists in.</summary>
        public static int MinVersionOf(A2LLMKind k)
        {
            return (int)k >= (int)A2LLMKind.Character ? Version2 : Version1;
        }

        private static void Check(bool cond, int code, string message)
        {
            if (!cond) throw new A2LLMProtocolException(code, message);
        }

        /// <summary>Strict UTF-8 (as Python's codec: no overlongs, no surrogates, at most U+10FFFF).</summary>
        public static bool ValidUtf8(byte[] p, int off, int n)
        {
            int i = 0;
            while (i < n)
            {
                int c = p[off + i];
                if (c < 0x80)
                {
                    i++;
                    continue;
                }
                int len, cp;
                if (c >= 0xC2 && c <= 0xDF) { len = 2; cp = c & 0x1F; }
                else if (c >= 0xE0 && c <= 0xEF) { len = 3; cp = c & 0x0F; }
                else if (c >= 0xF0 && c <= 0xF4) { len = 4; cp = c & 0x07; }
                else return false;
                if (n - i < len) return false;
                for (int k = 1; k < len; k++)
                {
                    int cc = p[off + i + k];
                    if ((cc & 0xC0) != 0x80) return false;
                    cp = (cp << 6) | (cc & 0x3F);
                }
                if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF))) return false;
                if (cp >= 0xD800 && cp <= 0xDFFF) return false;
                i += len;
            }
            return true;
        }

        private static bool Finite(float f)
        {
            return !float.IsNaN(f) && !float.IsInfinity(f);
        }

        // --- reading -------------------------------------------------------------------------------------------------
        private sealed class Reader
        {
            private readonly byte[] _b;
            private readonly int _start, _n;
            private int _pos;
            private readonly string _what;

            public Reader(byte[] b, int start, int n, string what)
            {
                _b = b;
                _start = start;
                _n = n;
                _what = what;
            }

            public int Take(long k)
            {
                if (k < 0 || k > _n - _pos)
                    throw new A2LLMProtocolException(A2LLMErrorCode.BadLength,
                        _what + ": needs " + k + " more bytes at offset " + _pos + ", payload has " + _n);
                int at = _start + _pos;
                _pos += (int)k;
                return at;
            }

            public byte U8() { return _b[Take(1)]; }
            public ushort U16() { int p = Take(2); return (ushort)(_b[p] | (_b[p + 1] << 8)); }
            public uint U32() { return Ld32(_b, Take(4)); }
            public ulong U64() { int p = Take(8); return Ld32(_b, p) | ((ulong)Ld32(_b, p + 4) << 32); }
            public float F32() { return LdF(_b, Take(4)); }

            public string Utf8(long k, string name)
            {
                int p = Take(k);
                if (!ValidUtf8(_b, p, (int)k))
                    throw new A2LLMProtocolException(A2LLMErrorCode.BadUtf8, _what + ": " + name + " is not valid UTF-8");
                return Encoding.UTF8.GetString(_b, p, (int)k);
            }

            /// <summary>Count guard first (as protocol.py), then the byte take; returns the offset.</summary>
            public int Array(long count, int item)
            {
                if (count > _n)
                    throw new A2LLMProtocolException(A2LLMErrorCode.BadLength, _what + ": count " + count + " exceeds the payload");
                return Take(count * item);
            }

            public void Finish()
            {
                if (_pos != _n)
                    throw new A2LLMProtocolException(A2LLMErrorCode.BadLength,
                        _what + ": " + (_n - _pos) + " trailing bytes after offset " + _pos);
            }
        }

        private static uint Ld32(byte[] b, int p)
        {
            return (uint)(b[p] | (b[p + 1] << 8) | (b[p + 2] << 16) | (b[p + 3] << 24));
        }

        private static float LdF(byte[] b, int p)
        {
            if (BitConverter.IsLittleEndian) return BitConverter.ToSingle(b, p);
            var t = new[] { b[p + 3], b[p + 2], b[p + 1], b[p] };
            return BitConverter.ToSingle(t, 0);
        }

        private static float[] Floats(byte[] b, int p, long n)
        {
            var f = new float[n];
            for (long i = 0; i < n; i++) f[i] = LdF(b, p + (int)(4 * i));
            return f;
        }

        private static void CheckRate(uint rate, string name)
        {
            if (rate < MinSampleRate || rate > MaxSampleRate)
                throw new A2LLMProtocolException(A2LLMErrorCode.BadValue, name + "=" + rate + " out of range");
        }

        private static void CheckFiniteArray(float[] a, string name)
        {
            for (int i = 0; i < a.Length; i++)
                if (!Finite(a[i]))
                    throw new A2LLMProtocolException(A2LLMErrorCode.NonFinite, name + ": non-finite value at flat index " + i);
        }

        private static void CheckIntensity(float v)
        {
            Check(Finite(v), A2LLMErrorCode.NonFinite, "intensity is not finite");
            Check(v >= 0f && v <= 1f, A2LLMErrorCode.BadValue, "intensity=" + v + " must be in [0, 1]");
        }

        /// <summary>Decodes one message in its concatenated form (header + payload).</summary>
        public static A2LLMMessage Decode(byte[] data)
        {
            if (data == null) throw new ArgumentNullException("data");
            return Decode(data, 0, data.Length);
        }

        public static A2LLMMessage Decode(byte[] data, int offset, int count)
        {
            Check(count >= HeaderSize, A2LLMErrorCode.BadLength, "message is " + count + " bytes, shorter than the header");
            Check(data[offset] == 0x41 && data[offset + 1] == 0x32 && data[offset + 2] == 0x4C && data[offset + 3] == 0x4D,
                A2LLMErrorCode.BadMagic, "bad magic, expected A2LM");
            int version = data[offset + 4] | (data[offset + 5] << 8);
            Check(version >= Version1 && version <= MaxVersion, A2LLMErrorCode.UnsupportedVersion,
                "protocol version " + version + " is not supported (supported: [1, 2])");
            int kind = data[offset + 6] | (data[offset + 7] << 8);
            Check(kind >= 1 && kind <= (int)A2LLMKind.BargeIn, A2LLMErrorCode.UnknownKind, "unknown message kind " + kind);
            var k = (A2LLMKind)kind;
            Check(version >= MinVersionOf(k), A2LLMErrorCode.UnknownKind,
                "message kind " + kind + " does not exist in protocol version " + version);
            uint length = Ld32(data, offset + 12);
            Check(length <= MaxPayloadBytes, A2LLMErrorCode.PayloadTooLarge, "payload_length " + length + " > " + MaxPayloadBytes);
            Check(count == HeaderSize + (long)length, A2LLMErrorCode.BadLength,
                "payload is " + (count - HeaderSize) + " bytes, header says " + length);
            var m = new A2LLMMessage
            {
                Kind = k,
                HeaderVersion = version,
                TurnId = Ld32(data, offset + 8),
                Seq = Ld32(data, offset + 16) | ((ulong)Ld32(data, offset + 20) << 32),
                SendTimeUs = Ld32(data, offset + 24) | ((ulong)Ld32(data, offset + 28) << 32),
            };
            var r = new Reader(data, offset + HeaderSize, (int)length, k.ToString());
            Parse(r, data, m);
            return m;
        }

        private static int ParseAudio(Reader r, byte[] b, A2LLMMessage m)
        {
            int fmt = r.U8();
            int flags = r.U8();
            int channels = r.U16();
            m.SampleRate = r.U32();
            m.SampleOffset = r.U64();
            uint n = r.U32();
            Check(channels == 1, A2LLMErrorCode.BadValue, "channels=" + channels + ", only mono (1) is supported");
            if (fmt == 1)
            {
                int p = r.Array(n, 2);
                m.Pcm16 = new short[n];
                for (int i = 0; i < n; i++) m.Pcm16[i] = (short)(b[p + 2 * i] | (b[p + 2 * i + 1] << 8));
            }
            else if (fmt == 2)
            {
                m.F32 = Floats(b, r.Array(n, 4), n);
            }
            else
            {
                throw new A2LLMProtocolException(A2LLMErrorCode.BadValue, "unknown audio format " + fmt);
            }
            r.Finish();
            return flags;
        }

        private static void ValidateAudio(A2LLMMessage m)
        {
            if (m.Pcm16 == null) CheckFiniteArray(m.F32, "audio samples");
            CheckRate(m.SampleRate, "sample_rate");
        }

        private static string[] Names(Reader r, string what)
        {
            int n = r.U8();
            var names = new string[n];
            for (int i = 0; i < n; i++) names[i] = r.Utf8(r.U8(), what);
            return names;
        }

        private static void Parse(Reader r, byte[] b, A2LLMMessage m)
        {
            switch (m.Kind)
            {
                case A2LLMKind.Hello:
                {
                    m.MinVersion = r.U16();
                    m.MaxVersion = r.U16();
                    m.Capabilities = r.U32();
                    int n = r.U8();
                    int p = r.Take(n);
                    m.LayoutIds = new byte[n];
                    System.Array.Copy(b, p, m.LayoutIds, 0, n);
                    m.ClientName = r.Utf8(r.U8(), "client_name");
                    r.Finish();
                    Check(m.MinVersion <= m.MaxVersion, A2LLMErrorCode.BadValue, "min_version > max_version");
                    break;
                }
                case A2LLMKind.Welcome:
                {
                    m.Version = r.U16();
                    int reserved = r.U16();
                    m.SessionId = r.U32();
                    m.Capabilities = r.U32();
                    m.HeartbeatMs = r.U32();
                    m.SessionTimeoutMs = r.U32();
                    m.InputSampleRate = r.U32();
                    m.OutputSampleRate = r.U32();
                    m.Fps = r.F32();
                    m.MaxPayload = r.U32();
                    int n = r.U8();
                    Check(reserved == 0, A2LLMErrorCode.BadValue, "Welcome: reserved field is not 0");
                    m.Layouts = new A2LLMLayoutInfo[n];
                    for (int i = 0; i < n; i++)
                    {
                        var lay = new A2LLMLayoutInfo { LayoutId = r.U8() };
                        int count = r.U16();
                        lay.Names = new string[count];
                        for (int j = 0; j < count; j++) lay.Names[j] = r.Utf8(r.U8(), "curve name");
                        m.Layouts[i] = lay;
                    }
                    m.ServerName = r.Utf8(r.U8(), "server_name");
                    r.Finish();
                    CheckRate(m.InputSampleRate, "input_sample_rate");
                    CheckRate(m.OutputSampleRate, "output_sample_rate");
                    Check(Finite(m.Fps), A2LLMErrorCode.NonFinite, "fps is not finite");
                    Check(m.Fps > 0, A2LLMErrorCode.BadValue, "fps must be > 0");
                    break;
                }
                case A2LLMKind.UserAudio:
                {
                    int flags = ParseAudio(r, b, m);
                    Check((flags & ~1) == 0, A2LLMErrorCode.BadValue, "unknown UserAudio flags " + flags);
                    m.EndOfUtterance = (flags & 1) != 0;
                    ValidateAudio(m);
                    break;
                }
                case A2LLMKind.AudioChunk:
                {
                    int flags = ParseAudio(r, b, m);
                    Check(flags == 0, A2LLMErrorCode.BadValue, "AudioChunk flags must be 0");
                    ValidateAudio(m);
                    break;
                }
                case A2LLMKind.MicAudio:
                {
                    int flags = ParseAudio(r, b, m);
                    Check((flags & ~1) == 0, A2LLMErrorCode.BadValue, "unknown MicAudio flags " + flags);
                    m.EndOfStream = (flags & 1) != 0;
                    ValidateAudio(m);
                    break;
                }
                case A2LLMKind.TextDelta:
                    m.ByteOffset = r.U32();
                    m.Text = r.Utf8(r.U32(), "text");
                    r.Finish();
                    break;
                case A2LLMKind.FaceFrames:
                {
                    m.FirstFrame = r.U64();
                    m.Fps = r.F32();
                    m.LayoutId = r.U8();
                    int reserved = r.U8();
                    m.Dims = r.U16();
                    uint frames = r.U32();
                    Check(reserved == 0, A2LLMErrorCode.BadValue, "FaceFrames: reserved byte is not 0");
                    Check(Finite(m.Fps), A2LLMErrorCode.NonFinite, "FaceFrames: fps is not finite");
                    int dims = LayoutDims(m.LayoutId);
                    Check(dims != 0, A2LLMErrorCode.BadValue, "FaceFrames: unknown layout_id " + m.LayoutId);
                    Check(m.Dims == dims, A2LLMErrorCode.BadValue,
                        "FaceFrames: layout " + m.LayoutId + " has " + dims + " dims, message says " + m.Dims);
                    Check(frames >= 1, A2LLMErrorCode.BadValue, "FaceFrames: n_frames is 0");
                    long count = (long)frames * m.Dims;
                    m.Values = Floats(b, r.Array(count, 4), count);
                    m.NumFrames = (int)frames;
                    r.Finish();
                    Check(m.Fps > 0, A2LLMErrorCode.BadValue, "fps must be > 0");
                    CheckFiniteArray(m.Values, "face values");
                    break;
                }
                case A2LLMKind.TurnEnd:
                {
                    m.Status = r.U8();
                    int r1 = r.U8();
                    int r2 = r.U16();
                    m.TtftS = r.F32();
                    m.TtfaS = r.F32();
                    m.FirstAudioS = r.F32();
                    m.Rtf = r.F32();
                    m.TotalS = r.F32();
                    m.TextBytes = r.U32();
                    m.TextDeltas = r.U32();
                    m.AudioSamples = r.U64();
                    m.AudioChunks = r.U32();
                    m.FaceFrames = r.U32();
                    Check(r1 == 0 && r2 == 0, A2LLMErrorCode.BadValue, "TurnEnd: reserved fields are not 0");
                    r.Finish();
                    Check(m.Status <= 2, A2LLMErrorCode.BadValue, "unknown turn status " + m.Status);
                    foreach (float f in new[] { m.TtftS, m.TtfaS, m.FirstAudioS, m.Rtf, m.TotalS })
                        Check(Finite(f), A2LLMErrorCode.NonFinite, "a TurnEnd timing is not finite");
                    break;
                }
                case A2LLMKind.Cancel:
                case A2LLMKind.Bye:
                    r.Finish();
                    break;
                case A2LLMKind.Heartbeat:
                    m.TimeUs = r.U64();
                    m.EchoUs = r.U64();
                    r.Finish();
                    break;
                case A2LLMKind.Error:
                {
                    m.Code = r.U16();
                    int n = r.U16();
                    Check(n <= MaxErrorMessage, A2LLMErrorCode.BadValue, "Error message of " + n + " bytes > " + MaxErrorMessage);
                    m.Message = r.Utf8(n, "message");
                    r.Finish();
                    break;
                }
                case A2LLMKind.Character:
                {
                    m.EmotionModes = r.U8();
                    int r1 = r.U8();
                    int r2 = r.U16();
                    m.Intensity = r.F32();
                    Check(r1 == 0 && r2 == 0, A2LLMErrorCode.BadValue, "Character: reserved fields are not 0");
                    Check((m.EmotionModes & ~3) == 0, A2LLMErrorCode.BadValue, "Character: unknown emotion_modes bits");
                    Check(Finite(m.Intensity), A2LLMErrorCode.NonFinite, "Character: intensity is not finite");
                    m.Voice = r.Utf8(r.U8(), "voice");
                    m.Emotion = r.Utf8(r.U8(), "emotion");
                    m.Persona = r.Utf8(r.U32(), "persona");
                    r.Finish();
                    CheckIntensity(m.Intensity);
                    Check(Encoding.UTF8.GetByteCount(m.Persona) <= MaxPayloadBytes - 16 - 2 * MaxName,
                        A2LLMErrorCode.BadValue, "persona is too long");
                    break;
                }
                case A2LLMKind.ServerInfo:
                {
                    m.MaxPersonaChars = r.U32();
                    m.MaxContextChars = r.U32();
                    m.MaxTextChars = r.U32();
                    m.VadMinSpeechMs = r.U32();
                    m.VadMinSilenceMs = r.U32();
                    m.VadBargeInMs = r.U32();
                    int n = r.U8();
                    int p = r.Take(4L * n);
                    m.MicRates = new uint[n];
                    for (int i = 0; i < n; i++) m.MicRates[i] = Ld32(b, p + 4 * i);
                    m.Voices = Names(r, "voice");
                    m.Emotions = Names(r, "emotion");
                    r.Finish();
                    foreach (uint rate in m.MicRates) CheckRate(rate, "mic rate");
                    foreach (string v in m.Voices) Check(v.Length > 0, A2LLMErrorCode.BadValue, "an empty name in voices");
                    foreach (string e in m.Emotions) Check(e.Length > 0, A2LLMErrorCode.BadValue, "an empty name in emotions");
                    break;
                }
                case A2LLMKind.ConfigAck:
                    m.AckedKind = r.U16();
                    m.Flags = r.U16();
                    r.Finish();
                    Check(m.AckedKind == (int)A2LLMKind.Character || m.AckedKind == (int)A2LLMKind.GameContext ||
                          m.AckedKind == (int)A2LLMKind.SetEmotion, A2LLMErrorCode.BadValue, "ConfigAck for kind " + m.AckedKind);
                    Check((m.Flags & ~1) == 0, A2LLMErrorCode.BadValue, "unknown ConfigAck flags " + m.Flags);
                    break;
                case A2LLMKind.GameContext:
                case A2LLMKind.UserText:
                    m.Text = r.Utf8(r.U32(), "text");
                    r.Finish();
                    break;
                case A2LLMKind.SetEmotion:
                {
                    m.Scope = r.U8();
                    int r1 = r.U8();
                    int r2 = r.U16();
                    m.Intensity = r.F32();
                    Check(r1 == 0 && r2 == 0, A2LLMErrorCode.BadValue, "SetEmotion: reserved fields are not 0");
                    Check(m.Scope <= ScopeNextTurn, A2LLMErrorCode.BadValue, "SetEmotion: unknown scope " + m.Scope);
                    Check(Finite(m.Intensity), A2LLMErrorCode.NonFinite, "SetEmotion: intensity is not finite");
                    m.Name = r.Utf8(r.U8(), "emotion name");
                    r.Finish();
                    CheckIntensity(m.Intensity);
                    Check(m.Name.Length > 0, A2LLMErrorCode.BadValue, "empty emotion name");
                    break;
                }
                case A2LLMKind.SpeechStarted:
                    m.StartSample = r.U64();
                    m.DetectedSample = r.U64();
                    r.Finish();
                    break;
                case A2LLMKind.SpeechEnded:
                {
                    m.StartSample = r.U64();
                    m.EndSample = r.U64();
                    m.DetectedSample = r.U64();
                    m.Reason = r.U8();
                    int r1 = r.U8(), r2 = r.U8(), r3 = r.U8();
                    Check(r1 == 0 && r2 == 0 && r3 == 0, A2LLMErrorCode.BadValue, "SpeechEnded: reserved bytes are not 0");
                    Check(m.Reason <= 2, A2LLMErrorCode.BadValue, "SpeechEnded: unknown reason " + m.Reason);
                    r.Finish();
                    break;
                }
                case A2LLMKind.BargeIn:
                    m.SpeechSample = r.U64();
                    m.DetectedSample = r.U64();
                    r.Finish();
                    break;
            }
        }

        // --- writing -------------------------------------------------------------------------------------------------
        private sealed class Writer
        {
            public readonly List<byte> B = new List<byte>(64);
            public Writer U8(int v) { B.Add((byte)v); return this; }
            public Writer U16(int v) { B.Add((byte)v); B.Add((byte)(v >> 8)); return this; }
            public Writer U32(uint v) { for (int i = 0; i < 4; i++) B.Add((byte)(v >> (8 * i))); return this; }
            public Writer U64(ulong v) { for (int i = 0; i < 8; i++) B.Add((byte)(v >> (8 * i))); return this; }

            public Writer F32(float f)
            {
                byte[] x = BitConverter.GetBytes(f);
                if (!BitConverter.IsLittleEndian) System.Array.Reverse(x);
                B.AddRange(x);
                return this;
            }

            public Writer Name(string s, string what)
            {
                byte[] x = Encoding.UTF8.GetBytes(s ?? "");
                if (x.Length > MaxName) throw new A2LLMProtocolException(A2LLMErrorCode.BadValue, what + " is longer than 255 bytes");
                B.Add((byte)x.Length);
                B.AddRange(x);
                return this;
            }

            public Writer Text32(string s)
            {
                byte[] x = Encoding.UTF8.GetBytes(s ?? "");
                U32((uint)x.Length);
                B.AddRange(x);
                return this;
            }
        }

        /// <summary>The concatenated form (header + payload). Checks what the receiver would refuse (intensity,
        /// names over 255 bytes, non-finite floats, payload size).</summary>
        public static byte[] Encode(A2LLMMessage m)
        {
            var w = new Writer();
            switch (m.Kind)
            {
                case A2LLMKind.Hello:
                    w.U16(m.MinVersion).U16(m.MaxVersion).U32(m.Capabilities).U8(m.LayoutIds.Length);
                    w.B.AddRange(m.LayoutIds);
                    w.Name(m.ClientName, "client_name");
                    break;
                case A2LLMKind.Welcome:
                    w.U16(m.Version).U16(0).U32(m.SessionId).U32(m.Capabilities).U32(m.HeartbeatMs).U32(m.SessionTimeoutMs)
                        .U32(m.InputSampleRate).U32(m.OutputSampleRate).F32(m.Fps).U32(m.MaxPayload).U8(m.Layouts.Length);
                    foreach (var lay in m.Layouts)
                    {
                        w.U8(lay.LayoutId).U16(lay.Names.Length);
                        foreach (string n in lay.Names) w.Name(n, "curve name");
                    }
                    w.Name(m.ServerName, "server_name");
                    break;
                case A2LLMKind.UserAudio:
                case A2LLMKind.AudioChunk:
                case A2LLMKind.MicAudio:
                {
                    bool pcm = m.Pcm16 != null;
                    if (!pcm) CheckFiniteArray(m.F32, "audio samples");
                    int flags = m.Kind == A2LLMKind.UserAudio && m.EndOfUtterance ? 1
                        : m.Kind == A2LLMKind.MicAudio && m.EndOfStream ? 1 : 0;
                    w.U8(pcm ? 1 : 2).U8(flags).U16(1).U32(m.SampleRate).U64(m.SampleOffset).U32((uint)m.NumSamples);
                    if (pcm) foreach (short s in m.Pcm16) w.U16(s);
                    else foreach (float f in m.F32) w.F32(f);
                    break;
                }
                case A2LLMKind.TextDelta:
                {
                    byte[] t = Encoding.UTF8.GetBytes(m.Text ?? "");
                    w.U32(m.ByteOffset).U32((uint)t.Length);
                    w.B.AddRange(t);
                    break;
                }
                case A2LLMKind.FaceFrames:
                    w.U64(m.FirstFrame).F32(m.Fps).U8(m.LayoutId).U8(0).U16(m.Dims).U32((uint)m.NumFrames);
                    foreach (float v in m.Values) w.F32(v);
                    break;
                case A2LLMKind.TurnEnd:
                    w.U8(m.Status).U8(0).U16(0).F32(m.TtftS).F32(m.TtfaS).F32(m.FirstAudioS).F32(m.Rtf).F32(m.TotalS)
                        .U32(m.TextBytes).U32(m.TextDeltas).U64(m.AudioSamples).U32(m.AudioChunks).U32(m.FaceFrames);
                    break;
                case A2LLMKind.Heartbeat:
                    w.U64(m.TimeUs).U64(m.EchoUs);
                    break;
                case A2LLMKind.Error:
                {
                    byte[] t = Encoding.UTF8.GetBytes(m.Message ?? "");
                    w.U16(m.Code).U16(t.Length);
                    w.B.AddRange(t);
                    break;
                }
                case A2LLMKind.Cancel:
                case A2LLMKind.Bye:
                    break;
                case A2LLMKind.Character:
                    Check((m.EmotionModes & ~3) == 0, A2LLMErrorCode.BadValue, "unknown emotion_modes bits");
                    CheckIntensity(m.Intensity);
                    w.U8(m.EmotionModes).U8(0).U16(0).F32(m.Intensity).Name(m.Voice, "voice").Name(m.Emotion, "emotion")
                        .Text32(m.Persona);
                    break;
                case A2LLMKind.ServerInfo:
                    w.U32(m.MaxPersonaChars).U32(m.MaxContextChars).U32(m.MaxTextChars).U32(m.VadMinSpeechMs)
                        .U32(m.VadMinSilenceMs).U32(m.VadBargeInMs).U8(m.MicRates.Length);
                    foreach (uint rate in m.MicRates) w.U32(rate);
                    w.U8(m.Voices.Length);
                    foreach (string v in m.Voices) w.Name(v, "voice");
                    w.U8(m.Emotions.Length);
                    foreach (string e in m.Emotions) w.Name(e, "emotion");
                    break;
                case A2LLMKind.ConfigAck:
                    w.U16(m.AckedKind).U16(m.Flags);
                    break;
                case A2LLMKind.GameContext:
                case A2LLMKind.UserText:
                    w.Text32(m.Text);
                    break;
                case A2LLMKind.SetEmotion:
                    Check(m.Scope == ScopeSession || m.Scope == ScopeNextTurn, A2LLMErrorCode.BadValue, "unknown emotion scope");
                    CheckIntensity(m.Intensity);
                    Check(!string.IsNullOrEmpty(m.Name), A2LLMErrorCode.BadValue, "empty emotion name");
                    w.U8(m.Scope).U8(0).U16(0).F32(m.Intensity).Name(m.Name, "emotion name");
                    break;
                case A2LLMKind.SpeechStarted:
                    w.U64(m.StartSample).U64(m.DetectedSample);
                    break;
                case A2LLMKind.SpeechEnded:
                    w.U64(m.StartSample).U64(m.EndSample).U64(m.DetectedSample).U8(m.Reason).U8(0).U16(0);
                    break;
                case A2LLMKind.BargeIn:
                    w.U64(m.SpeechSample).U64(m.DetectedSample);
                    break;
            }
            int size = w.B.Count;
            Check(size <= MaxPayloadBytes, A2LLMErrorCode.PayloadTooLarge, "payload " + size + " > " + MaxPayloadBytes);
            var h = new Writer();
            h.U8(0x41).U8(0x32).U8(0x4C).U8(0x4D).U16(Math.Max(m.HeaderVersion, MinVersionOf(m.Kind))).U16((int)m.Kind)
                .U32(m.TurnId).U32((uint)size).U64(m.Seq).U64(m.SendTimeUs);
            h.B.AddRange(w.B);
            return h.B.ToArray();
        }
    }
}
