/*
 * a2llm_client.h - the C ABI of the a2llm native client core (plugin_bridge/native).
 *
 * One client = one connection (a ZeroMQ DEALER socket) to the a2llm bridge server
 * (`python -m plugin_bridge.serve`), speaking wire protocol version 2 (plugin_bridge/PROTOCOL.md; a version 1 server gets
 * a version 1 session: the calls marked "version 2" then return A2LLM_ERR_UNSUPPORTED).
 * Both engine plugins (Unity: C# P/Invoke; Unreal: C++) use only this header.
 *
 * Threads
 *   - The core owns one background I/O thread per client: it connects, sends Hello (and again after a server
 *     restart), answers heartbeats, receives and decodes every message, fills the audio ring and the face jitter
 *     buffer, and queues events for a2llm_client_poll. Nothing is received on the caller's threads.
 *   - a2llm_client_send_audio_*, a2llm_client_cancel, a2llm_client_state, a2llm_client_wait_ready,
 *     a2llm_client_stats, a2llm_client_read_audio, a2llm_client_playback_position, a2llm_client_face_frame_at and the
 *     curve / layout queries are thread-safe (any thread, concurrently).
 *   - a2llm_client_poll has ONE consumer (typically the game thread): the pointers inside the event it returns stay
 *     valid until the next a2llm_client_poll call on the same client or a2llm_client_destroy.
 *   - a2llm_client_destroy must not race with any other call on the same client.
 *   - a2llm_client_read_audio is meant for the engine's audio callback: it never blocks on the network; it takes
 *     a short internal lock (a few microseconds) shared with the I/O thread.
 *
 * Errors
 *   Functions return a negative a2llm_status on failure and set a thread-local message for a2llm_last_error().
 *   No C++ exception ever crosses this ABI. All strings are UTF-8 and NUL-terminated.
 *
 * Game characters (protocol version 2, PROTOCOL.md 10)
 *   - a2llm_client_set_character (persona, voice, default emotion + intensity, emotion modes), a2llm_client_set_context
 *     (the game's situation, changed between turns without resetting the conversation) and a2llm_client_set_emotion
 *     may be called at any time, also before the Welcome: the core keeps the latest of each and sends it after every
 *     Welcome of a version 2 session (so a server restart does not lose the character). The server answers each with
 *     a CONFIG_ACK event (applied) or an ERROR event (refused: UNKNOWN_VOICE, UNKNOWN_EMOTION, TEXT_TOO_LONG,
 *     BAD_TEXT, TURN_IN_PROGRESS; the session stays usable). Once the SERVER_INFO event has arrived, the core also
 *     checks names and sizes itself and returns A2LLM_ERR_INVALID_ARGUMENT with the reason.
 *   - a2llm_client_send_text starts a typed turn, answered like an utterance.
 *   - Hands-free: a2llm_client_send_mic_* streams the microphone continuously (20-100 ms pieces in real time, at one
 *     of the server's mic rates); the server's voice-activity detector cuts utterances and says so with
 *     SPEECH_STARTED / SPEECH_ENDED events (the turn, with bit 31 set in its id, starts at SPEECH_ENDED and is
 *     answered like any other); speech over an answer gives a BARGE_IN event: the core has already faded that
 *     answer out (15 ms) and dropped the rest. Hands-free needs echo cancellation or a headset: without it the
 *     character's own voice reaches the microphone and interrupts itself (enable the platform's acoustic echo
 *     canceller, or do not send the microphone while the answer plays).
 *   - Idle face (A2LLM_CAP_IDLE_FACE): between turns the server streams idle frames (blinks, saccades, breathing,
 *     listening); a2llm_client_face_frame_at returns them when no answer plays (flag A2LLM_FRAME_IDLE).
 *
 * Audio and A/V sync
 *   Answer audio is float32 mono at the Welcome's output rate (24000 Hz); face frames run at the Welcome's fps
 *   (25): frame k of a turn covers answer samples [k*960, (k+1)*960). Turns play back one after another.
 *   The engine's audio callback pulls samples with a2llm_client_read_audio; the jitter buffer holds back the
 *   start of each turn until `jitter_target_ms` of audio is buffered (or the turn has ended); after an underrun it
 *   plays silence WITHOUT advancing the playhead and re-buffers the same target, so audio and face never drift.
 *   The game thread asks a2llm_client_face_frame_at(samples_played) for the face of that audio instant: frame
 *   position is samples_played * fps / rate (PROTOCOL.md 4.5), i.e. frame k sits at sample k * 960, and values are
 *   linearly interpolated between frames floor(pos) and floor(pos) + 1. A frame that is late (not received yet) is never invented:
 *   the last available frame at or before the instant is HELD (flag A2LLM_FRAME_HELD). Frames may arrive out of
 *   order; they are stored by index.
 */
#ifndef A2LLM_CLIENT_H
#define A2LLM_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32) && defined(A2LLM_STATIC)
#  define A2LLM_API /* linked into the program from the static library (the tests) */
#elif defined(_WIN32)
#  if defined(A2LLM_BUILDING)
#    define A2LLM_API __declspec(dllexport)
#  else
#    define A2LLM_API __declspec(dllimport)
#  endif
#elif defined(__GNUC__)
#  define A2LLM_API __attribute__((visibility("default")))
#else
#  define A2LLM_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define A2LLM_ABI_VERSION 2      /* bumped on any incompatible change of this header (2: game characters) */
#define A2LLM_PROTOCOL_VERSION 2 /* highest wire protocol version spoken (a version 1 server is still served) */

/* Face layout wire ids (a2llm_rt/face/layouts.py). */
#define A2LLM_LAYOUT_FLAME58 1    /* 58 values: expression[50] | jaw[3] | global pose[3] | eyelids[2] */
#define A2LLM_LAYOUT_ARKIT52 2    /* 52 ARKit blend shapes in ARFaceAnchor order, values in [0, 1] */
#define A2LLM_LAYOUT_LIVELINK61 3 /* ARKIT52 + head yaw/pitch/roll + left/right eye yaw/pitch/roll (radians) */

/* Capabilities (Hello asks, Welcome grants). */
#define A2LLM_CAP_TEXT 1u
#define A2LLM_CAP_AUDIO 2u
#define A2LLM_CAP_FACE 4u
#define A2LLM_CAP_LIVELINK_UDP 8u /* Welcome only */
#define A2LLM_CAP_IDLE_FACE 16u   /* version 2: idle face frames between turns (needs FACE) */

/* Character emotion modes (a2llm_character.emotion_modes) and emotion scopes (a2llm_client_set_emotion). */
#define A2LLM_EMOTION_PROMPT 1u /* the emotion is an instruction in the prompt: speech and face follow it (A2-LLM) */
#define A2LLM_EMOTION_FACE 2u   /* a bounded offset/gain on the ARKit face output, blended over 300 ms (Audio2Face) */
#define A2LLM_SCOPE_SESSION 0   /* the session's default emotion from now on */
#define A2LLM_SCOPE_NEXT_TURN 1 /* only the next turn that starts */

/* Turns the server starts itself (hands-free utterances) have this bit set in their id. */
#define A2LLM_SERVER_TURN_BIT 0x80000000u

/* SPEECH_ENDED reasons (a2llm_event.reason). */
#define A2LLM_SPEECH_END_SILENCE 0
#define A2LLM_SPEECH_END_MAX_LENGTH 1
#define A2LLM_SPEECH_END_OF_STREAM 2

/* CONFIG_ACK flags (a2llm_event.flags). */
#define A2LLM_ACK_CONVERSATION_RESET 1u /* a changed persona started a new conversation */

/* Pass as samples_played to a2llm_client_face_frame_at: use the core's own playhead (samples handed out by
 * a2llm_client_read_audio for the playing turn) minus options.output_latency_ms. */
#define A2LLM_PLAYHEAD_CURRENT UINT64_MAX

/* Opaque client handle. */
typedef struct a2llm_client a2llm_client;

typedef enum a2llm_status {
    A2LLM_OK = 0,
    A2LLM_ERR_INVALID_ARGUMENT = -1, /* NULL pointer, bad size, non-finite sample, unknown layout, ... */
    A2LLM_ERR_NOT_CONNECTED = -2,    /* no Welcome yet (or the session was lost and is being re-opened) */
    A2LLM_ERR_TIMEOUT = -3,
    A2LLM_ERR_BUFFER_TOO_SMALL = -4,
    A2LLM_ERR_NETWORK = -5,          /* ZeroMQ failed (bad endpoint, ...) */
    A2LLM_ERR_PROTOCOL = -6,         /* malformed bytes (see a2llm_last_error) */
    A2LLM_ERR_CLOSED = -7,           /* the client was closed (or its I/O thread stopped) */
    A2LLM_ERR_REFUSED = -8,          /* send_audio: the server ended this utterance's turn (AUDIO_TOO_LONG, or the
                                        turn failed / ended): nothing is sent (no retry); end the utterance
                                        (end_of_utterance) or cancel, then start a new one */
    A2LLM_ERR_UNSUPPORTED = -9,      /* a version 2 call in a version 1 session (the server speaks only version 1) */
    A2LLM_ERR_INTERNAL = -99
} a2llm_status;

typedef enum a2llm_state {
    A2LLM_STATE_CONNECTING = 0, /* Hello sent, waiting for Welcome (also after a server restart) */
    A2LLM_STATE_READY = 1,      /* Welcome received: send audio */
    A2LLM_STATE_CLOSED = 2
} a2llm_state;

typedef enum a2llm_event_type {
    A2LLM_EVENT_NONE = 0,
    A2LLM_EVENT_CONNECTED = 1,    /* Welcome: session_id, code = negotiated version, text = server name */
    A2LLM_EVENT_TEXT_DELTA = 2,   /* text/text_len, byte_offset */
    A2LLM_EVENT_AUDIO = 3,        /* sample_offset, n_samples, sample_rate, data (already in the audio ring) */
    A2LLM_EVENT_FACE = 4,         /* first_frame, n_frames, dims, layout_id, fps, data [n_frames*dims] row-major
                                     (already in the face jitter buffer) */
    A2LLM_EVENT_TURN_END = 5,     /* status (a2llm_turn_status), timings and counts */
    A2LLM_EVENT_ERROR = 6,        /* code = the protocol ErrorCode (plugin_bridge/protocol.py): from the server's
                                     Error message, or 1..9 for a server message the core could not decode
                                     (then turn_id = 0); text = message */
    A2LLM_EVENT_DISCONNECTED = 7, /* the server went silent for ~3.5 heartbeats, or answered NOT_WELCOMED /
                                     SESSION_EXPIRED (it restarted); the core says Hello again by itself
                                     (CONNECTED follows). A half-sent utterance is lost: send it again. */
    /* version 2 */
    A2LLM_EVENT_SERVER_INFO = 8,    /* limits, mic rates, voices and emotions arrived (a2llm_client_server_info) */
    A2LLM_EVENT_CONFIG_ACK = 9,     /* code = the kind applied (12 Character, 15 GameContext, 17 SetEmotion);
                                       flags: A2LLM_ACK_CONVERSATION_RESET */
    A2LLM_EVENT_SPEECH_STARTED = 10, /* hands-free: turn_id (bit 31 set) = the turn the utterance will become;
                                       start_sample, detected_sample (offsets in the mic stream at its rate) */
    A2LLM_EVENT_SPEECH_ENDED = 11,  /* start_sample, end_sample, detected_sample, reason: the turn starts now */
    A2LLM_EVENT_BARGE_IN = 12       /* the player spoke over the answer of turn_id: it is cancelled (already faded
                                       out here; its TURN_END CANCELLED follows); start_sample = where the speech
                                       began, detected_sample */
} a2llm_event_type;

typedef enum a2llm_turn_status {
    A2LLM_TURN_COMPLETED = 0,
    A2LLM_TURN_CANCELLED = 1,
    A2LLM_TURN_FAILED = 2
} a2llm_turn_status;

/* Flags written by a2llm_client_face_frame_at. */
#define A2LLM_FRAME_INTERPOLATED 0 /* both neighbouring frames present (or exactly on a frame, or past the last
                                      frame of a turn that has ended) */
#define A2LLM_FRAME_HELD 1         /* the next frame is late: the last available frame is held */
#define A2LLM_FRAME_IDLE 2         /* no turn is playing: the last frame shown is held */

/* One event. Field order is chosen so that there is no implicit padding on 64-bit targets (P/Invoke friendly,
 * sizeof == 160 on 64-bit). Fields that do not apply to a type are 0 / NULL. */
typedef struct a2llm_event {
    int32_t type;            /* a2llm_event_type */
    uint32_t turn_id;        /* header turn id (0 for session-level messages) */
    uint64_t sample_offset;  /* AUDIO: offset of data[0] in the turn's answer audio */
    uint64_t first_frame;    /* FACE: index of the first frame in the turn */
    const char* text;        /* TEXT_DELTA / ERROR / CONNECTED: UTF-8, NUL-terminated, text_len bytes */
    const float* data;       /* AUDIO: n_samples floats; FACE: n_frames*dims floats */
    uint32_t text_len;       /* bytes, without the NUL */
    uint32_t byte_offset;    /* TEXT_DELTA: offset of this piece in the turn's UTF-8 text */
    uint32_t n_samples;      /* AUDIO */
    uint32_t sample_rate;    /* AUDIO */
    uint32_t n_frames;       /* FACE */
    uint32_t dims;           /* FACE: values per frame (58, 52 or 61) */
    int32_t layout_id;       /* FACE */
    float fps;               /* FACE */
    int32_t code;            /* ERROR: error code; CONNECTED: protocol version */
    uint32_t session_id;     /* CONNECTED */
    float ttft_s;            /* TURN_END, seconds from the end of the question (-1 = not measured): TTFT (A2-LLM 6.1),
                                first generated audio token */
    float ttfa_s;            /* TTFA (A2-LLM 6.1): first generated facial motion frame */
    float first_audio_s;     /* extra: the server sent the first AudioChunk */
    float rtf;               /* RTF (A2-LLM 6.1): generation time / duration of the synthesized speech */
    float total_s;
    uint32_t text_bytes;     /* TURN_END counts (as sent by the server) */
    uint32_t text_deltas;
    uint32_t audio_chunks;
    uint32_t face_frames;    /* frames per layout */
    int32_t status;          /* TURN_END: a2llm_turn_status */
    uint64_t audio_samples;  /* TURN_END */
    /* version 2: offsets in the client's mic stream at its own rate (PROTOCOL.md 10.8) */
    uint64_t start_sample;     /* SPEECH_STARTED / SPEECH_ENDED: utterance start; BARGE_IN: interrupting speech start */
    uint64_t end_sample;       /* SPEECH_ENDED */
    uint64_t detected_sample;  /* SPEECH_* / BARGE_IN: stream samples the server had when it decided */
    int32_t reason;            /* SPEECH_ENDED: A2LLM_SPEECH_END_* */
    uint32_t flags;            /* CONFIG_ACK: A2LLM_ACK_* */
} a2llm_event;

typedef struct a2llm_client_options {
    uint32_t struct_size;          /* = sizeof(a2llm_client_options); set by a2llm_client_options_init */
    uint32_t capabilities;         /* A2LLM_CAP_* wanted; default TEXT|AUDIO|FACE */
    uint8_t layouts[4];            /* wanted face layouts in preference order; default {ARKIT52} */
    uint32_t n_layouts;            /* entries used in layouts (0..4); default 1 */
    const char* client_name;       /* UTF-8, <= 255 bytes, copied; NULL = "a2llm-native/<version>" */
    uint32_t jitter_target_ms;     /* audio buffered before a turn starts playing (and after an underrun);
                                      default 100 */
    uint32_t output_latency_ms;    /* subtracted from the core's playhead for A2LLM_PLAYHEAD_CURRENT; default 0 */
    uint32_t hello_retry_ms;       /* re-send Hello while no Welcome; default 1000 */
    uint32_t event_queue_capacity; /* AUDIO/FACE events waiting for poll; when that many wait, further AUDIO/FACE
                                      events are dropped (their data still goes to the ring / jitter buffer; stats
                                      count drops). TEXT, TURN_END, ERROR and connection events are never dropped.
                                      default 1024; 0 = no AUDIO/FACE events at all */
    uint32_t max_buffered_seconds; /* audio ring limit per client (oldest unplayed turn audio is never dropped:
                                      beyond the limit, new audio is refused and counted in stats); default 120 */
    uint32_t max_version;          /* highest protocol version offered in Hello: 0 = A2LLM_PROTOCOL_VERSION (2);
                                      1 = speak version 1 only */
    const char* curve_server_key;  /* ZeroMQ CURVE: the server's public key (Z85, 40 chars), or NULL */
    const char* curve_public_key;  /* the client's CURVE key pair (Z85); NULL = generate one */
    const char* curve_secret_key;
} a2llm_client_options; /* sizeof == 72 on 64-bit targets */

typedef struct a2llm_stats {
    uint64_t messages_received;
    uint64_t bytes_received;
    uint64_t messages_sent;
    uint64_t decode_errors;       /* malformed messages from the server (dropped, reported as ERROR events) */
    uint64_t events_dropped;      /* AUDIO/FACE events dropped because poll did not keep up */
    uint64_t audio_samples_received;
    uint64_t audio_samples_played;
    uint64_t audio_samples_refused;  /* over max_buffered_seconds */
    uint64_t underruns;           /* times playback ran dry in the middle of a turn */
    uint64_t face_frames_received;
    uint64_t late_frames;         /* face_frame_at calls that had to hold a frame */
    uint64_t buffered_samples;    /* answer audio waiting to be played (all turns) */
    uint32_t session_id;
    uint32_t reconnects;          /* Welcomes received after the first */
} a2llm_stats;

/* --- library ------------------------------------------------------------------------------------------------ */
A2LLM_API const char* a2llm_version(void);         /* "0.2.0" */
A2LLM_API uint32_t a2llm_abi_version(void);        /* A2LLM_ABI_VERSION */
A2LLM_API uint32_t a2llm_protocol_version(void);   /* A2LLM_PROTOCOL_VERSION */
/* The last error message set on the calling thread by a failed call ("" when none). Valid until the next call
 * into the library on this thread. */
A2LLM_API const char* a2llm_last_error(void);
/* Values per frame of a layout id (58, 52, 61), or 0 if unknown. */
A2LLM_API int32_t a2llm_layout_dims(int32_t layout_id);

/* --- lifetime ----------------------------------------------------------------------------------------------- */
/* Fill *opts with the defaults above. */
A2LLM_API void a2llm_client_options_init(a2llm_client_options* opts);
/* Connect to `endpoint` (e.g. "tcp://127.0.0.1:5555") and start the I/O thread; returns at once (state
 * CONNECTING). opts may be NULL (defaults). Returns NULL on error (a2llm_last_error says why). */
A2LLM_API a2llm_client* a2llm_client_create(const char* endpoint, const a2llm_client_options* opts);
/* Send Bye, stop the I/O thread, free everything. NULL is ignored. */
A2LLM_API void a2llm_client_destroy(a2llm_client* client);

/* a2llm_state */
A2LLM_API int32_t a2llm_client_state(a2llm_client* client);
/* Block until READY (A2LLM_OK), timeout (A2LLM_ERR_TIMEOUT) or closed. timeout_ms < 0 = forever. */
A2LLM_API int32_t a2llm_client_wait_ready(a2llm_client* client, int32_t timeout_ms);

/* --- sending ------------------------------------------------------------------------------------------------ */
/* Send a piece of the player's utterance (mono). The first call after a turn's end_of_utterance starts a new turn
 * (turn ids are 1, 2, 3, ... per client); end_of_utterance != 0 ends the utterance and starts the answer.
 * n may be 0 (e.g. to only end the utterance). Large buffers are split into several messages.
 * Returns the turn id (> 0) or a negative a2llm_status (NOT_CONNECTED before the Welcome). The server refuses
 * audio for a new turn while an answer is being generated (an ERROR event, TURN_IN_PROGRESS): cancel first.
 * Final answers are final: once the server ended the utterance being sent (an ERROR event AUDIO_TOO_LONG or
 * TURN_FAILED, or a TURN_END, for its turn id), the rest of that utterance is neither sent nor re-sent: every
 * further call for it returns A2LLM_ERR_REFUSED until the call with end_of_utterance != 0 (or a cancel) closes it
 * locally; the next call starts a new turn. The core never re-sends audio on its own (not after a reconnect either). */
A2LLM_API int32_t a2llm_client_send_audio_pcm16(a2llm_client* client, const int16_t* samples, uint32_t n,
                                                uint32_t sample_rate, int32_t end_of_utterance);
A2LLM_API int32_t a2llm_client_send_audio_f32(a2llm_client* client, const float* samples, uint32_t n,
                                              uint32_t sample_rate, int32_t end_of_utterance);
/* Barge-in: tell the server to stop the current turn (its TURN_END with status CANCELLED follows) and drop all
 * locally buffered answer audio and face frames at once (playback falls silent, the face holds its last frame).
 * Also abandons a half-sent utterance. Returns A2LLM_OK or a negative status. */
A2LLM_API int32_t a2llm_client_cancel(a2llm_client* client);

/* --- receiving ---------------------------------------------------------------------------------------------- */
/* Take the next event: returns 1 and fills *event, 0 when there is none (event->type = NONE), or a negative
 * status. Never blocks. Single consumer; pointers in *event stay valid until the next poll or destroy. */
A2LLM_API int32_t a2llm_client_poll(a2llm_client* client, a2llm_event* event);
A2LLM_API int32_t a2llm_client_stats(a2llm_client* client, a2llm_stats* out);

/* --- playback and A/V sync ---------------------------------------------------------------------------------- */
/* Audio callback: write exactly n float32 mono samples at 24 kHz into out (answer audio; silence where there is
 * none: idle, pre-buffering or underrun). Returns how many answer samples were played (0..n), i.e. how far the
 * playhead moved; negative on bad arguments. */
A2LLM_API int32_t a2llm_client_read_audio(a2llm_client* client, float* out, int32_t n);
/* Samples played so far of the playing turn (the playhead), and that turn's id in *turn_id (0 when idle;
 * turn_id may be NULL). */
A2LLM_API uint64_t a2llm_client_playback_position(a2llm_client* client, uint32_t* turn_id);
/* The face of the playing turn at answer sample `samples_played` (or A2LLM_PLAYHEAD_CURRENT), in layout *layout_id
 * (in: wanted layout, 0 = the first granted one; out: the layout written). Writes dims values into out_curves.
 * Returns dims (> 0), 0 when no frame of that layout was ever received (out untouched), or a negative status
 * (BUFFER_TOO_SMALL when capacity < dims). *flags (may be NULL) gets A2LLM_FRAME_*. */
A2LLM_API int32_t a2llm_client_face_frame_at(a2llm_client* client, uint64_t samples_played, float* out_curves,
                                             int32_t capacity, int32_t* layout_id, int32_t* flags);

/* --- game characters (protocol version 2) ---------------------------------------------------------------- */
typedef struct a2llm_character {
    uint32_t struct_size;   /* = sizeof(a2llm_character); set by a2llm_character_init */
    uint32_t emotion_modes; /* A2LLM_EMOTION_PROMPT | A2LLM_EMOTION_FACE (default both) */
    float intensity;        /* default emotion intensity, 0..1 (default 0) */
    uint32_t reserved0;     /* 0 */
    const char* persona;    /* the character's system prompt (UTF-8); NULL or "" = the server's default persona.
                               A changed persona starts a new conversation (CONFIG_ACK flags RESET) */
    const char* voice;      /* a name from the server's voices; NULL or "" = the server's default voice */
    const char* emotion;    /* default emotion, a name from the server's emotions; NULL or "" = neutral */
} a2llm_character; /* sizeof == 40 on 64-bit targets */

typedef struct a2llm_server_info {
    uint32_t max_persona_chars; /* limits in Unicode code points */
    uint32_t max_context_chars;
    uint32_t max_text_chars;
    uint32_t vad_min_speech_ms; /* the voice-activity detector's thresholds */
    uint32_t vad_min_silence_ms;
    uint32_t vad_barge_in_ms;
    uint32_t n_mic_rates;
    uint32_t mic_rates[8];      /* the first n_mic_rates (at most 8) rates a2llm_client_send_mic_* accepts */
    uint32_t n_voices;          /* names: a2llm_client_voice_name(0 .. n_voices-1); the first is the default */
    uint32_t n_emotions;        /* names: a2llm_client_emotion_name(...) */
} a2llm_server_info; /* sizeof == 68 */

/* Negotiated protocol version of the current session (1 or 2), 0 before the Welcome. */
A2LLM_API int32_t a2llm_client_session_version(a2llm_client* client);
/* Fill *ch with the defaults above. */
A2LLM_API void a2llm_character_init(a2llm_character* ch);
/* Configure the character (replaces persona, voice and default emotion). Strings are copied. Only between turns
 * (the server answers TURN_IN_PROGRESS otherwise). Returns A2LLM_OK when stored (and sent, if connected) or a
 * negative status: INVALID_ARGUMENT (bad UTF-8, intensity outside 0..1, unknown mode bits, and after SERVER_INFO:
 * unknown voice or emotion, persona over the limit), UNSUPPORTED in a version 1 session. */
A2LLM_API int32_t a2llm_client_set_character(a2llm_client* client, const a2llm_character* ch);
/* The game's situation ("The player just lost the battle."), used from the next turn on; NULL or "" clears it.
 * Does not reset the conversation. Same returns as set_character. */
A2LLM_API int32_t a2llm_client_set_context(a2llm_client* client, const char* text);
/* The emotion for the session (A2LLM_SCOPE_SESSION, kept and re-sent after a reconnect) or only the next turn
 * (A2LLM_SCOPE_NEXT_TURN; needs a connected version 2 session). name: a server emotion (not empty); intensity 0..1.
 * Allowed during a turn. Same returns as set_character. */
A2LLM_API int32_t a2llm_client_set_emotion(a2llm_client* client, const char* name, float intensity, int32_t scope);
/* Start a typed turn (UTF-8, not empty; at most max_text_chars). Returns the turn id (> 0; same numbering as the
 * audio turns) or a negative status: NOT_CONNECTED, UNSUPPORTED (version 1), INVALID_ARGUMENT (empty, bad UTF-8,
 * too long, or an utterance is half-sent). Refused turns get an ERROR event and a TURN_END FAILED. */
A2LLM_API int32_t a2llm_client_send_text(a2llm_client* client, const char* text);
/* Hands-free: the next piece of the continuous microphone stream (mono, at a rate from a2llm_server_info.mic_rates).
 * The first call (and the first after end_of_stream != 0, a rate change or a reconnect) starts a new stream at
 * sample 0. To end the stream (an utterance in progress ends) call with n = 0 and end_of_stream != 0: the stream's own
 * rate is used (sample_rate is ignored; nothing is sent when no stream runs). Returns A2LLM_OK or NOT_CONNECTED /
 * UNSUPPORTED / INVALID_ARGUMENT (rate not accepted, non-finite or out-of-range float samples). Large buffers are
 * split into several messages. */
A2LLM_API int32_t a2llm_client_send_mic_pcm16(a2llm_client* client, const int16_t* samples, uint32_t n,
                                              uint32_t sample_rate, int32_t end_of_stream);
A2LLM_API int32_t a2llm_client_send_mic_f32(a2llm_client* client, const float* samples, uint32_t n,
                                            uint32_t sample_rate, int32_t end_of_stream);
/* The server's ServerInfo: returns 1 and fills *out once SERVER_INFO arrived, 0 before (or in a version 1 session). */
A2LLM_API int32_t a2llm_client_server_info(a2llm_client* client, a2llm_server_info* out);
/* Voice / emotion names from ServerInfo (UTF-8), or NULL. Pointers stay valid until destroy. */
A2LLM_API const char* a2llm_client_voice_name(a2llm_client* client, int32_t index);
A2LLM_API const char* a2llm_client_emotion_name(a2llm_client* client, int32_t index);

/* --- static data from the Welcome (curve names are sent once; frames carry values by index) ------------------ */
/* Granted layout ids into out (up to capacity); returns how many were granted (0 before the Welcome). */
A2LLM_API int32_t a2llm_client_layouts(a2llm_client* client, int32_t* out, int32_t capacity);
/* Number of curves of a granted layout, or 0. */
A2LLM_API int32_t a2llm_client_curve_count(a2llm_client* client, int32_t layout_id);
/* Name of curve `index` of a granted layout (UTF-8), or NULL. The pointer stays valid until destroy. */
A2LLM_API const char* a2llm_client_curve_name(a2llm_client* client, int32_t layout_id, int32_t index);

#ifdef __cplusplus
}
#endif

#endif /* A2LLM_CLIENT_H */
