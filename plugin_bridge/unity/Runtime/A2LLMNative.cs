// P/Invoke declarations mirroring plugin_bridge/native/include/a2llm_client.h (ABI version 2) exactly.
// Structs are blittable (LayoutKind.Sequential, pointers as IntPtr, the options' uint8_t layouts[4] as four bytes),
// so they cross the boundary without marshalling; strings are UTF-8 and converted by hand (Utf8 below), which
// works the same on Mono, IL2CPP and .NET.
using System;
using System.Runtime.InteropServices;
using System.Text;

namespace A2LLM
{
    /// <summary>Raw C ABI of the a2llm native client core. Prefer <see cref="A2LLMClient"/>.</summary>
    public static class A2LLMNative
    {
        /// <summary>Library name: liba2llm_client.so (Linux, Android), liba2llm_client.dylib (macOS), a2llm_client.dll;
        /// on iOS native plugins are linked statically into the player ("__Internal"; the assembly excludes iOS until
        /// such a build of the core exists).</summary>
#if UNITY_IOS && !UNITY_EDITOR
        public const string Lib = "__Internal";
#else
        public const string Lib = "a2llm_client";
#endif

        public const uint AbiVersion = 2;
        public const uint ProtocolVersion = 2;

        public const int LayoutFlame58 = 1;
        public const int LayoutArkit52 = 2;
        public const int LayoutLiveLink61 = 3;

        public const uint CapText = 1;
        public const uint CapAudio = 2;
        public const uint CapFace = 4;
        public const uint CapLiveLinkUdp = 8;
        /// <summary>Version 2: idle face frames between turns (blinks, saccades, breathing, listening).</summary>
        public const uint CapIdleFace = 16;

        public const uint EmotionPrompt = 1; // the emotion is an instruction in the prompt (A2-LLM)
        public const uint EmotionFace = 2; // a bounded offset/gain on the ARKit output (Audio2Face)
        public const int ScopeSession = 0;
        public const int ScopeNextTurn = 1;
        public const uint ServerTurnBit = 0x80000000u;
        public const uint AckConversationReset = 1;

        public const ulong PlayheadCurrent = ulong.MaxValue;

        public const int FrameInterpolated = 0;
        public const int FrameHeld = 1;
        public const int FrameIdle = 2;

        // a2llm_status
        public const int Ok = 0;
        public const int ErrInvalidArgument = -1;
        public const int ErrNotConnected = -2;
        public const int ErrTimeout = -3;
        public const int ErrBufferTooSmall = -4;
        public const int ErrNetwork = -5;
        public const int ErrProtocol = -6;
        public const int ErrClosed = -7;
        /// <summary>send_audio: the server ended this utterance (AUDIO_TOO_LONG / turn failed); nothing was sent.</summary>
        public const int ErrRefused = -8;
        /// <summary>A version 2 call in a version 1 session (the server speaks only version 1).</summary>
        public const int ErrUnsupported = -9;
        public const int ErrInternal = -99;

        // protocol ErrorCodes carried by ERROR events (plugin_bridge/protocol.py)
        public const int ErrorTurnFailed = 26;
        public const int ErrorAudioTooLong = 28;

        // a2llm_state
        public const int StateConnecting = 0;
        public const int StateReady = 1;
        public const int StateClosed = 2;

        /// <summary>a2llm_event (160 bytes on 64-bit targets, no implicit padding).</summary>
        [StructLayout(LayoutKind.Sequential)]
        public struct Event
        {
            public int type;
            public uint turn_id;
            public ulong sample_offset;
            public ulong first_frame;
            public IntPtr text;
            public IntPtr data;
            public uint text_len;
            public uint byte_offset;
            public uint n_samples;
            public uint sample_rate;
            public uint n_frames;
            public uint dims;
            public int layout_id;
            public float fps;
            public int code;
            public uint session_id;
            public float ttft_s;
            public float ttfa_s;
            public float first_audio_s;
            public float rtf;
            public float total_s;
            public uint text_bytes;
            public uint text_deltas;
            public uint audio_chunks;
            public uint face_frames;
            public int status;
            public ulong audio_samples;
            public ulong start_sample;
            public ulong end_sample;
            public ulong detected_sample;
            public int reason;
            public uint flags;
        }

        /// <summary>a2llm_character (40 bytes on 64-bit targets). Fill with <see cref="a2llm_character_init"/>.</summary>
        [StructLayout(LayoutKind.Sequential)]
        public struct Character
        {
            public uint struct_size;
            public uint emotion_modes;
            public float intensity;
            public uint reserved0;
            public IntPtr persona;
            public IntPtr voice;
            public IntPtr emotion;
        }

        /// <summary>a2llm_server_info (68 bytes).</summary>
        [StructLayout(LayoutKind.Sequential)]
        public struct ServerInfo
        {
            public uint max_persona_chars;
            public uint max_context_chars;
            public uint max_text_chars;
            public uint vad_min_speech_ms;
            public uint vad_min_silence_ms;
            public uint vad_barge_in_ms;
            public uint n_mic_rates;
            public uint mic_rate0, mic_rate1, mic_rate2, mic_rate3, mic_rate4, mic_rate5, mic_rate6, mic_rate7;
            public uint n_voices;
            public uint n_emotions;

            public uint[] MicRates()
            {
                var all = new[] { mic_rate0, mic_rate1, mic_rate2, mic_rate3, mic_rate4, mic_rate5, mic_rate6, mic_rate7 };
                var r = new uint[Math.Min(n_mic_rates, 8u)];
                Array.Copy(all, r, r.Length);
                return r;
            }
        }

        /// <summary>a2llm_client_options (72 bytes on 64-bit targets). Fill with <see cref="a2llm_client_options_init"/>.</summary>
        [StructLayout(LayoutKind.Sequential)]
        public struct ClientOptions
        {
            public uint struct_size;
            public uint capabilities;
            public byte layout0;
            public byte layout1;
            public byte layout2;
            public byte layout3;
            public uint n_layouts;
            public IntPtr client_name;
            public uint jitter_target_ms;
            public uint output_latency_ms;
            public uint hello_retry_ms;
            public uint event_queue_capacity;
            public uint max_buffered_seconds;
            public uint max_version; // 0 = the highest (2); 1 = speak protocol version 1 only
            public IntPtr curve_server_key;
            public IntPtr curve_public_key;
            public IntPtr curve_secret_key;
        }

        /// <summary>a2llm_stats (104 bytes).</summary>
        [StructLayout(LayoutKind.Sequential)]
        public struct Stats
        {
            public ulong messages_received;
            public ulong bytes_received;
            public ulong messages_sent;
            public ulong decode_errors;
            public ulong events_dropped;
            public ulong audio_samples_received;
            public ulong audio_samples_played;
            public ulong audio_samples_refused;
            public ulong underruns;
            public ulong face_frames_received;
            public ulong late_frames;
            public ulong buffered_samples;
            public uint session_id;
            public uint reconnects;
        }

        // --- library ---------------------------------------------------------------------------------------------
        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        public static extern IntPtr a2llm_version();

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        public static extern uint a2llm_abi_version();

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        public static extern uint a2llm_protocol_version();

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        public static extern IntPtr a2llm_last_error();

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        public static extern int a2llm_layout_dims(int layoutId);

        // --- lifetime --------------------------------------------------------------------------------------------
        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        public static extern void a2llm_client_options_init(ref ClientOptions opts);

        /// <summary>endpoint: a NUL-terminated UTF-8 string (<see cref="Utf8.Alloc"/>).</summary>
        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        public static extern IntPtr a2llm_client_create(IntPtr endpoint, ref ClientOptions opts);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        public static extern void a2llm_client_destroy(IntPtr client);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        public static extern int a2llm_client_state(IntPtr client);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        public static extern int a2llm_client_wait_ready(IntPtr client, int timeoutMs);

        // --- sending ---------------------------------------------------------------------------------------------
        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        public static extern int a2llm_client_send_audio_pcm16(IntPtr client, short[] samples, uint n, uint sampleRate,
            int endOfUtterance);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        public static extern int a2llm_client_send_audio_f32(IntPtr client, float[] samples, uint n, uint sampleRate,
            int endOfUtterance);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        public static extern int a2llm_client_cancel(IntPtr client);

        // --- receiving -------------------------------------------------------------------------------------------
        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        public static extern int a2llm_client_poll(IntPtr client, out Event ev);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        public static extern int a2llm_client_stats(IntPtr client, out Stats stats);

        // --- playback and A/V sync -------------------------------------------------------------------------------
        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        public static extern int a2llm_client_read_audio(IntPtr client, float[] output, int n);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        public static extern ulong a2llm_client_playback_position(IntPtr client, out uint turnId);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        public static extern int a2llm_client_face_frame_at(IntPtr client, ulong samplesPlayed, float[] outCurves,
            int capacity, ref int layoutId, out int flags);

        // --- game characters (protocol version 2) -----------------------------------------------------------------
        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        public static extern int a2llm_client_session_version(IntPtr client);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        public static extern void a2llm_character_init(ref Character ch);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        public static extern int a2llm_client_set_character(IntPtr client, ref Character ch);

        /// <summary>text: a NUL-terminated UTF-8 string (<see cref="Utf8.Alloc"/>), IntPtr.Zero clears.</summary>
        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        public static extern int a2llm_client_set_context(IntPtr client, IntPtr text);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        public static extern int a2llm_client_set_emotion(IntPtr client, IntPtr name, float intensity, int scope);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        public static extern int a2llm_client_send_text(IntPtr client, IntPtr text);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        public static extern int a2llm_client_send_mic_pcm16(IntPtr client, short[] samples, uint n, uint sampleRate,
            int endOfStream);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        public static extern int a2llm_client_send_mic_f32(IntPtr client, float[] samples, uint n, uint sampleRate,
            int endOfStream);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        public static extern int a2llm_client_server_info(IntPtr client, out ServerInfo info);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        public static extern IntPtr a2llm_client_voice_name(IntPtr client, int index);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        public static extern IntPtr a2llm_client_emotion_name(IntPtr client, int index);

        // --- static data from the Welcome ------------------------------------------------------------------------
        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        public static extern int a2llm_client_layouts(IntPtr client, int[] output, int capacity);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        public static extern int a2llm_client_curve_count(IntPtr client, int layoutId);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        public static extern IntPtr a2llm_client_curve_name(IntPtr client, int layoutId, int index);

        /// <summary>The calling thread's last error message from the core ("" when none).</summary>
        public static string LastError()
        {
            return Utf8.FromNative(a2llm_last_error());
        }

        /// <summary>Hand-written UTF-8 marshalling (portable across Mono, IL2CPP and .NET).</summary>
        public static class Utf8
        {
            /// <summary>A NUL-terminated UTF-8 copy of s in unmanaged memory (IntPtr.Zero for null). Free with Free.</summary>
            public static IntPtr Alloc(string s)
            {
                if (s == null) return IntPtr.Zero;
                byte[] bytes = Encoding.UTF8.GetBytes(s);
                IntPtr p = Marshal.AllocHGlobal(bytes.Length + 1);
                Marshal.Copy(bytes, 0, p, bytes.Length);
                Marshal.WriteByte(p, bytes.Length, 0);
                return p;
            }

            public static void Free(IntPtr p)
            {
                if (p != IntPtr.Zero) Marshal.FreeHGlobal(p);
            }

            /// <summary>Decodes a NUL-terminated UTF-8 string (null for IntPtr.Zero).</summary>
            public static string FromNative(IntPtr p)
            {
                if (p == IntPtr.Zero) return null;
                int n = 0;
                while (Marshal.ReadByte(p, n) != 0) n++;
                return FromNative(p, n);
            }

            /// <summary>Decodes `length` bytes of UTF-8 at p.</summary>
            public static string FromNative(IntPtr p, int length)
            {
                if (p == IntPtr.Zero) return null;
                if (length == 0) return "";
                var bytes = new byte[length];
                Marshal.Copy(p, bytes, 0, length);
                return Encoding.UTF8.GetString(bytes);
            }
        }
    }
}
