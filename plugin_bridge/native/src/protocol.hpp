// The a2llm wire protocol (versions 1 and 2) in C++: a mirror of plugin_bridge/protocol.py (the reference; spec
// PROTOCOL.md, version 2 in its section 10).
//
// Every message = a 32-byte little-endian header + a payload. decode() takes the concatenated form (as in the golden
// fixtures), decode_frames() the two ZeroMQ frames. Both check every length and value exactly as protocol.py does,
// in the same order, and report the same ErrorCode; they never throw and never read out of bounds.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace a2llm {
namespace proto {

constexpr uint16_t kVersion = 1;     // header version of the version 1 kinds (and of Hello, always)
constexpr uint16_t kVersion2 = 2;    // game characters (PROTOCOL.md 10)
constexpr uint16_t kMaxVersion = 2;  // the highest version this implementation speaks
constexpr size_t kHeaderSize = 32;
constexpr uint32_t kMaxPayload = 4u * 1024u * 1024u;
constexpr uint32_t kMaxErrorMessage = 1024;
constexpr uint32_t kMaxName = 255;
constexpr uint32_t kMinSampleRate = 8000;
constexpr uint32_t kMaxSampleRate = 192000;
constexpr uint8_t kAudioFlagEndOfUtterance = 1;
// version 2 (PROTOCOL.md 10)
constexpr uint8_t kEmotionModePrompt = 1;  // the emotion is an instruction in the prompt (the A2-LLM way)
constexpr uint8_t kEmotionModeFace = 2;    // ... an offset/gain on the ARKit output (the Audio2Face way)
constexpr uint16_t kConfigAckConversationReset = 1;
constexpr uint8_t kMicFlagEndOfStream = 1;
constexpr uint32_t kServerTurnBit = 0x80000000u;  // turns the server starts itself (hands-free utterances)
constexpr uint32_t kCapIdleFace = 16;
enum EmotionScope : uint8_t { kScopeSession = 0, kScopeNextTurn = 1 };
enum SpeechEndReason : uint8_t { kEndSilence = 0, kEndMaxLength = 1, kEndOfStream = 2 };

enum class Kind : uint16_t {
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
    // version 2: only with header version >= 2
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
};
constexpr int kMaxKind = 21;

enum ErrorCode : uint16_t {
    kBadMagic = 1,
    kUnsupportedVersion = 2,
    kUnknownKind = 3,
    kBadLength = 4,
    kPayloadTooLarge = 5,
    kNonFinite = 6,
    kBadValue = 7,
    kBadUtf8 = 8,
    kBadFraming = 9,
    kNotWelcomed = 20,
    kSessionExpired = 21,
    kServerBusy = 22,
    kTurnInProgress = 23,
    kUnknownTurn = 24,
    kClientTooSlow = 25,
    kTurnFailed = 26,
    kShuttingDown = 27,
    kAudioTooLong = 28,
    kInternal = 39,
    // version 2
    kUnknownVoice = 40,
    kUnknownEmotion = 41,
    kTextTooLong = 42,
    kBadText = 43,
    kUnsupportedRate = 44,
};

enum AudioFormat : uint8_t { kPcm16 = 1, kF32 = 2 };

const char* kind_name(Kind k);
// The lowest header version a kind exists in (1 for kinds 1-11, 2 for kinds 12-21).
uint16_t min_version(Kind k);
// Values per frame of a face layout wire id (1 flame58: 58, 2 arkit52: 52, 3 livelink61: 61), 0 if unknown.
int layout_dims(int layout_id);
// Strict UTF-8 check (same acceptance as Python's "utf-8" codec: no overlongs, no surrogates, <= U+10FFFF).
bool valid_utf8(const uint8_t* p, size_t n);

struct DecodeError {
    uint16_t code = 0;
    std::string message;
};

struct LayoutInfo {
    uint8_t layout_id = 0;
    std::vector<std::string> names;
};

// One decoded message: a flat record; the fields of its kind are set, the others keep their defaults.
struct Message {
    Kind kind = Kind::Heartbeat;
    uint32_t turn_id = 0;
    uint64_t seq = 0;
    uint64_t send_time_us = 0;
    // Header version: decoded from the header; when encoding, max(header_version, min_version(kind)) is written.
    uint16_t header_version = 0;

    // Hello
    uint16_t min_version = kVersion;
    uint16_t max_version = kVersion;
    std::vector<uint8_t> layout_ids;  // wanted layouts, preference order
    // Hello + Welcome
    uint32_t capabilities = 0;
    std::string name;  // Hello: client_name, Welcome: server_name
    // Welcome
    uint16_t version = kVersion;
    uint32_t session_id = 0;
    uint32_t heartbeat_ms = 1000;
    uint32_t session_timeout_ms = 10000;
    uint32_t input_sample_rate = 16000;
    uint32_t output_sample_rate = 24000;
    uint32_t max_payload = kMaxPayload;
    std::vector<LayoutInfo> layouts;
    // Welcome + FaceFrames
    float fps = 25.0f;
    // UserAudio + AudioChunk
    uint8_t audio_format = kF32;
    bool end_of_utterance = false;
    uint32_t sample_rate = 24000;
    uint64_t sample_offset = 0;
    std::vector<int16_t> pcm16;  // audio_format == kPcm16
    std::vector<float> f32;      // audio_format == kF32
    // TextDelta (text) + Error (text = message)
    uint32_t byte_offset = 0;
    std::string text;
    // FaceFrames
    uint64_t first_frame = 0;
    uint8_t layout_id = 2;
    uint16_t dims = 0;
    uint32_t n_frames = 0;
    std::vector<float> values;  // [n_frames * dims] row-major
    // TurnEnd
    uint8_t status = 0;
    float ttft_s = -1.f, ttfa_s = -1.f, first_audio_s = -1.f, rtf = -1.f, total_s = -1.f;
    uint32_t text_bytes = 0, text_deltas = 0, audio_chunks = 0, face_frames = 0;
    uint64_t audio_samples = 0;
    // Heartbeat
    uint64_t time_us = 0, echo_us = 0;
    // Error
    uint16_t code = kInternal;

    // --- version 2 ---
    // Character (persona, voice, emotion, intensity, emotion_modes) + SetEmotion (scope, intensity, name)
    uint8_t emotion_modes = kEmotionModePrompt | kEmotionModeFace;
    float intensity = 0.0f;
    std::string voice;
    std::string emotion;
    std::string persona;
    uint8_t scope = kScopeSession;
    // ServerInfo
    uint32_t max_persona_chars = 0, max_context_chars = 0, max_text_chars = 0;
    uint32_t vad_min_speech_ms = 0, vad_min_silence_ms = 0, vad_barge_in_ms = 0;
    std::vector<uint32_t> mic_rates;
    std::vector<std::string> voices;
    std::vector<std::string> emotions;
    // ConfigAck
    uint16_t acked_kind = 0;
    uint16_t flags = 0;
    // MicAudio (audio body above; sample_offset = offset in the mic stream)
    bool end_of_stream = false;
    // SpeechStarted / SpeechEnded / BargeIn (mic stream offsets at the client's rate)
    uint64_t start_sample = 0, end_sample = 0, detected_sample = 0, speech_sample = 0;
    uint8_t reason = kEndSilence;
    // GameContext / UserText use `text`; SetEmotion uses `name`.

    size_t n_samples() const { return audio_format == kPcm16 ? pcm16.size() : f32.size(); }
};

// Header fields after the checks of protocol.decode_header (length, magic, version, kind, payload_length).
struct Header {
    uint16_t version = kVersion;
    Kind kind = Kind::Heartbeat;
    uint32_t turn_id = 0;
    uint32_t payload_length = 0;
    uint64_t seq = 0;
    uint64_t send_time_us = 0;
};

bool decode_header(const uint8_t* data, size_t n, Header& out, DecodeError& err);
// Concatenated form (header + payload). Returns false and fills err on malformed input.
bool decode(const uint8_t* data, size_t n, Message& out, DecodeError& err);
// The two ZeroMQ frames.
bool decode_frames(const uint8_t* header, size_t header_len, const uint8_t* payload, size_t payload_len, Message& out,
                   DecodeError& err);

// Encoding (byte-identical to protocol.py for valid messages). encode_payload does not validate.
std::vector<uint8_t> encode_payload(const Message& m);
std::array<uint8_t, kHeaderSize> encode_header(const Message& m, uint32_t payload_length);
std::vector<uint8_t> encode(const Message& m);  // header + payload

// Little-endian stores used by the encoder and by the client to stamp seq into a header.
void put_u64(uint8_t* p, uint64_t v);

}  // namespace proto
}  // namespace a2llm
