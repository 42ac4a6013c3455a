// Decoder and encoder of the a2llm wire protocol (versions 1 and 2); see protocol.hpp. Mirrors plugin_bridge/protocol.py check by
// check (same order, same ErrorCode) so that every client rejects the same bytes for the same reason.
#include "protocol.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace a2llm {
namespace proto {

namespace {

uint16_t ld16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t ld32(const uint8_t* p) {
    return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) | (static_cast<uint32_t>(p[2]) << 16) |
           (static_cast<uint32_t>(p[3]) << 24);
}
uint64_t ld64(const uint8_t* p) { return static_cast<uint64_t>(ld32(p)) | (static_cast<uint64_t>(ld32(p + 4)) << 32); }
float ldf(const uint8_t* p) {
    uint32_t u = ld32(p);
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

// Thrown only inside this file (caught in decode_*), never across a public function.
struct Fail {
    uint16_t code;
    std::string message;
};

[[noreturn]] void fail(uint16_t code, std::string message) { throw Fail{code, std::move(message)}; }
void check(bool cond, uint16_t code, const char* message) {
    if (!cond) fail(code, message);
}

// Bounds-checked little-endian reader over a payload (mirror of protocol._Reader).
class Reader {
public:
    Reader(const uint8_t* p, size_t n, const char* what) : p_(p), n_(n), what_(what) {}

    const uint8_t* take(uint64_t k) {
        if (k > n_ - pos_) {
            fail(kBadLength, std::string(what_) + ": needs " + std::to_string(k) + " more bytes at offset " +
                                 std::to_string(pos_) + ", payload has " + std::to_string(n_));
        }
        const uint8_t* out = p_ + pos_;
        pos_ += static_cast<size_t>(k);
        return out;
    }
    uint8_t u8() { return *take(1); }
    uint16_t u16() { return ld16(take(2)); }
    uint32_t u32() { return ld32(take(4)); }
    uint64_t u64() { return ld64(take(8)); }
    float f32() { return ldf(take(4)); }

    std::string utf8(uint64_t k, const char* name) {
        const uint8_t* b = take(k);
        if (!valid_utf8(b, static_cast<size_t>(k))) fail(kBadUtf8, std::string(what_) + ": " + name + " is not valid UTF-8");
        return std::string(reinterpret_cast<const char*>(b), static_cast<size_t>(k));
    }
    // Count guard first (as protocol.py), then the byte take.
    const uint8_t* array(uint64_t count, size_t item) {
        if (count > n_) fail(kBadLength, std::string(what_) + ": count " + std::to_string(count) + " exceeds the payload");
        return take(count * item);
    }
    void finish() {
        if (pos_ != n_) {
            fail(kBadLength, std::string(what_) + ": " + std::to_string(n_ - pos_) + " trailing bytes after offset " +
                                 std::to_string(pos_));
        }
    }

private:
    const uint8_t* p_;
    size_t n_;
    size_t pos_ = 0;
    const char* what_;
};

void check_rate(uint32_t rate, const char* name) {
    if (rate < kMinSampleRate || rate > kMaxSampleRate) {
        fail(kBadValue, std::string(name) + "=" + std::to_string(rate) + " out of range");
    }
}

void check_finite_array(const std::vector<float>& v, const char* name) {
    for (size_t i = 0; i < v.size(); ++i) {
        if (!std::isfinite(v[i])) fail(kNonFinite, std::string(name) + ": non-finite value at flat index " + std::to_string(i));
    }
}

void read_floats(const uint8_t* b, uint64_t n, std::vector<float>& out) {
    out.resize(static_cast<size_t>(n));
    for (size_t i = 0; i < out.size(); ++i) out[i] = ldf(b + 4 * i);
}

void parse_hello(Reader& r, Message& m) {
    m.min_version = r.u16();
    m.max_version = r.u16();
    m.capabilities = r.u32();
    uint8_t n = r.u8();
    const uint8_t* ids = r.take(n);
    m.layout_ids.assign(ids, ids + n);
    uint8_t ln = r.u8();
    m.name = r.utf8(ln, "client_name");
    r.finish();
    check(m.min_version <= m.max_version, kBadValue, "min_version > max_version");
}

void parse_welcome(Reader& r, Message& m) {
    m.version = r.u16();
    uint16_t reserved = r.u16();
    m.session_id = r.u32();
    m.capabilities = r.u32();
    m.heartbeat_ms = r.u32();
    m.session_timeout_ms = r.u32();
    m.input_sample_rate = r.u32();
    m.output_sample_rate = r.u32();
    m.fps = r.f32();
    m.max_payload = r.u32();
    uint8_t n = r.u8();
    check(reserved == 0, kBadValue, "Welcome: reserved field is not 0");
    m.layouts.clear();
    for (int i = 0; i < n; ++i) {
        LayoutInfo lay;
        lay.layout_id = r.u8();
        uint16_t count = r.u16();
        for (int j = 0; j < count; ++j) {
            uint8_t ln = r.u8();
            lay.names.push_back(r.utf8(ln, "curve name"));
        }
        m.layouts.push_back(std::move(lay));
    }
    uint8_t ln = r.u8();
    m.name = r.utf8(ln, "server_name");
    r.finish();
    check_rate(m.input_sample_rate, "input_sample_rate");
    check_rate(m.output_sample_rate, "output_sample_rate");
    check(std::isfinite(m.fps), kNonFinite, "fps is not finite");
    check(m.fps > 0, kBadValue, "fps must be > 0");
}

// Shared audio body; returns flags (checked by the caller, as in protocol.py).
uint8_t parse_audio(Reader& r, Message& m) {
    uint8_t fmt = r.u8();
    uint8_t flags = r.u8();
    uint16_t channels = r.u16();
    m.sample_rate = r.u32();
    m.sample_offset = r.u64();
    uint32_t n = r.u32();
    check(channels == 1, kBadValue, "channels != 1, only mono is supported");
    m.audio_format = fmt;
    if (fmt == kPcm16) {
        const uint8_t* b = r.array(n, 2);
        m.pcm16.resize(n);
        for (size_t i = 0; i < n; ++i) m.pcm16[i] = static_cast<int16_t>(ld16(b + 2 * i));
    } else if (fmt == kF32) {
        read_floats(r.array(n, 4), n, m.f32);
    } else {
        fail(kBadValue, "unknown audio format " + std::to_string(fmt));
    }
    r.finish();
    return flags;
}

void validate_audio(const Message& m) {
    if (m.audio_format == kF32) check_finite_array(m.f32, "audio samples");
    check_rate(m.sample_rate, "sample_rate");
}

void parse_face(Reader& r, Message& m) {
    m.first_frame = r.u64();
    m.fps = r.f32();
    m.layout_id = r.u8();
    uint8_t reserved = r.u8();
    m.dims = r.u16();
    m.n_frames = r.u32();
    check(reserved == 0, kBadValue, "FaceFrames: reserved byte is not 0");
    check(std::isfinite(m.fps), kNonFinite, "FaceFrames: fps is not finite");
    int dims = layout_dims(m.layout_id);
    if (dims == 0) fail(kBadValue, "FaceFrames: unknown layout_id " + std::to_string(m.layout_id));
    if (m.dims != dims) {
        fail(kBadValue, "FaceFrames: layout " + std::to_string(m.layout_id) + " has " + std::to_string(dims) +
                            " dims, message says " + std::to_string(m.dims));
    }
    check(m.n_frames >= 1, kBadValue, "FaceFrames: n_frames is 0");
    uint64_t count = static_cast<uint64_t>(m.n_frames) * m.dims;
    read_floats(r.array(count, 4), count, m.values);
    r.finish();
    check(m.fps > 0, kBadValue, "fps must be > 0");
    check_finite_array(m.values, "face values");
}

void parse_turn_end(Reader& r, Message& m) {
    m.status = r.u8();
    uint8_t r1 = r.u8();
    uint16_t r2 = r.u16();
    m.ttft_s = r.f32();
    m.ttfa_s = r.f32();
    m.first_audio_s = r.f32();
    m.rtf = r.f32();
    m.total_s = r.f32();
    m.text_bytes = r.u32();
    m.text_deltas = r.u32();
    m.audio_samples = r.u64();
    m.audio_chunks = r.u32();
    m.face_frames = r.u32();
    check(r1 == 0 && r2 == 0, kBadValue, "TurnEnd: reserved fields are not 0");
    r.finish();
    check(m.status <= 2, kBadValue, "unknown turn status");
    const float* fs[] = {&m.ttft_s, &m.ttfa_s, &m.first_audio_s, &m.rtf, &m.total_s};
    const char* names[] = {"ttft_s", "ttfa_s", "first_audio_s", "rtf", "total_s"};
    for (int i = 0; i < 5; ++i) {
        if (!std::isfinite(*fs[i])) fail(kNonFinite, std::string(names[i]) + " is not finite");
    }
}

// --- version 2 (PROTOCOL.md 10) ------------------------------------------------------------------------------------
std::string name8(Reader& r, const char* what) {
    uint8_t n = r.u8();
    return r.utf8(n, what);
}

std::string text32(Reader& r, const char* what) {
    uint32_t n = r.u32();
    return r.utf8(n, what);
}

// protocol._intensity, run by the message's _validate after the parse
void check_intensity(float v) {
    check(std::isfinite(v), kNonFinite, "intensity is not finite");
    if (!(v >= 0.0f && v <= 1.0f)) fail(kBadValue, "intensity=" + std::to_string(v) + " must be in [0, 1]");
}

void parse_character(Reader& r, Message& m) {
    m.emotion_modes = r.u8();
    uint8_t r1 = r.u8();
    uint16_t r2 = r.u16();
    m.intensity = r.f32();
    check(r1 == 0 && r2 == 0, kBadValue, "Character: reserved fields are not 0");
    check((m.emotion_modes & ~3) == 0, kBadValue, "Character: unknown emotion_modes bits");
    check(std::isfinite(m.intensity), kNonFinite, "Character: intensity is not finite");
    m.voice = name8(r, "voice");
    m.emotion = name8(r, "emotion");
    m.persona = text32(r, "persona");
    r.finish();
    check_intensity(m.intensity);
    check(m.persona.size() <= kMaxPayload - 16 - 2 * kMaxName, kBadValue, "persona is too long");
}

void parse_server_info(Reader& r, Message& m) {
    m.max_persona_chars = r.u32();
    m.max_context_chars = r.u32();
    m.max_text_chars = r.u32();
    m.vad_min_speech_ms = r.u32();
    m.vad_min_silence_ms = r.u32();
    m.vad_barge_in_ms = r.u32();
    uint8_t n = r.u8();
    const uint8_t* b = r.take(4u * n);
    m.mic_rates.resize(n);
    for (size_t i = 0; i < n; ++i) m.mic_rates[i] = ld32(b + 4 * i);
    std::vector<std::string>* lists[] = {&m.voices, &m.emotions};
    const char* what[] = {"voice", "emotion"};
    for (int k = 0; k < 2; ++k) {
        uint8_t count = r.u8();
        lists[k]->clear();
        for (int i = 0; i < count; ++i) lists[k]->push_back(name8(r, what[k]));
    }
    r.finish();
    for (uint32_t rate : m.mic_rates) {
        if (rate < kMinSampleRate || rate > kMaxSampleRate) fail(kBadValue, "mic rate " + std::to_string(rate) + " out of range");
    }
    for (const std::string& v : m.voices) check(!v.empty(), kBadValue, "an empty name in voices");
    for (const std::string& e : m.emotions) check(!e.empty(), kBadValue, "an empty name in emotions");
}

void parse_config_ack(Reader& r, Message& m) {
    m.acked_kind = r.u16();
    m.flags = r.u16();
    r.finish();
    uint16_t k = m.acked_kind;
    if (k != static_cast<uint16_t>(Kind::Character) && k != static_cast<uint16_t>(Kind::GameContext) &&
        k != static_cast<uint16_t>(Kind::SetEmotion)) {
        fail(kBadValue, "ConfigAck for kind " + std::to_string(k));
    }
    check((m.flags & ~kConfigAckConversationReset) == 0, kBadValue, "unknown ConfigAck flags");
}

void parse_set_emotion(Reader& r, Message& m) {
    m.scope = r.u8();
    uint8_t r1 = r.u8();
    uint16_t r2 = r.u16();
    m.intensity = r.f32();
    check(r1 == 0 && r2 == 0, kBadValue, "SetEmotion: reserved fields are not 0");
    check(m.scope <= kScopeNextTurn, kBadValue, "SetEmotion: unknown scope");
    check(std::isfinite(m.intensity), kNonFinite, "SetEmotion: intensity is not finite");
    m.name = name8(r, "emotion name");
    r.finish();
    check_intensity(m.intensity);
    check(!m.name.empty(), kBadValue, "empty emotion name");
}

void parse_speech_ended(Reader& r, Message& m) {
    m.start_sample = r.u64();
    m.end_sample = r.u64();
    m.detected_sample = r.u64();
    m.reason = r.u8();
    uint8_t r1 = r.u8(), r2 = r.u8(), r3 = r.u8();
    check(r1 == 0 && r2 == 0 && r3 == 0, kBadValue, "SpeechEnded: reserved bytes are not 0");
    check(m.reason <= kEndOfStream, kBadValue, "SpeechEnded: unknown reason");
    r.finish();
}

void parse_payload(Kind kind, const uint8_t* p, size_t n, Message& m) {
    Reader r(p, n, kind_name(kind));
    switch (kind) {
        case Kind::Hello: parse_hello(r, m); break;
        case Kind::Welcome: parse_welcome(r, m); break;
        case Kind::UserAudio: {
            uint8_t flags = parse_audio(r, m);
            check((flags & ~kAudioFlagEndOfUtterance) == 0, kBadValue, "unknown UserAudio flags");
            m.end_of_utterance = (flags & kAudioFlagEndOfUtterance) != 0;
            validate_audio(m);
            break;
        }
        case Kind::AudioChunk: {
            uint8_t flags = parse_audio(r, m);
            check(flags == 0, kBadValue, "AudioChunk flags must be 0");
            validate_audio(m);
            break;
        }
        case Kind::TextDelta: {
            m.byte_offset = r.u32();
            uint32_t len = r.u32();
            m.text = r.utf8(len, "text");
            r.finish();
            break;
        }
        case Kind::FaceFrames: parse_face(r, m); break;
        case Kind::TurnEnd: parse_turn_end(r, m); break;
        case Kind::Heartbeat:
            m.time_us = r.u64();
            m.echo_us = r.u64();
            r.finish();
            break;
        case Kind::Error: {
            m.code = r.u16();
            uint16_t len = r.u16();
            if (len > kMaxErrorMessage) {
                fail(kBadValue, "Error message of " + std::to_string(len) + " bytes > " + std::to_string(kMaxErrorMessage));
            }
            m.text = r.utf8(len, "message");
            r.finish();
            break;
        }
        case Kind::Cancel:
        case Kind::Bye: r.finish(); break;
        case Kind::Character: parse_character(r, m); break;
        case Kind::ServerInfo: parse_server_info(r, m); break;
        case Kind::ConfigAck: parse_config_ack(r, m); break;
        case Kind::GameContext:
        case Kind::UserText:
            m.text = text32(r, "text");
            r.finish();
            break;
        case Kind::SetEmotion: parse_set_emotion(r, m); break;
        case Kind::MicAudio: {
            uint8_t flags = parse_audio(r, m);
            check((flags & ~kMicFlagEndOfStream) == 0, kBadValue, "unknown MicAudio flags");
            m.end_of_stream = (flags & kMicFlagEndOfStream) != 0;
            validate_audio(m);
            break;
        }
        case Kind::SpeechStarted:
            m.start_sample = r.u64();
            m.detected_sample = r.u64();
            r.finish();
            break;
        case Kind::SpeechEnded: parse_speech_ended(r, m); break;
        case Kind::BargeIn:
            m.speech_sample = r.u64();
            m.detected_sample = r.u64();
            r.finish();
            break;
    }
}

void header_checks(const uint8_t* d, size_t n, Header& h) {
    if (n != kHeaderSize) fail(kBadLength, "header is " + std::to_string(n) + " bytes, expected 32");
    check(std::memcmp(d, "A2LM", 4) == 0, kBadMagic, "bad magic, expected A2LM");
    uint16_t version = ld16(d + 4);
    if (version < kVersion || version > kMaxVersion) {
        fail(kUnsupportedVersion, "protocol version " + std::to_string(version) + " is not supported (supported: [1, 2])");
    }
    uint16_t kind = ld16(d + 6);
    if (kind < 1 || kind > kMaxKind) fail(kUnknownKind, "unknown message kind " + std::to_string(kind));
    h.kind = static_cast<Kind>(kind);
    h.version = version;
    if (version < min_version(h.kind)) {
        fail(kUnknownKind, "message kind " + std::to_string(kind) + " does not exist in protocol version " +
                               std::to_string(version));
    }
    h.turn_id = ld32(d + 8);
    h.payload_length = ld32(d + 12);
    h.seq = ld64(d + 16);
    h.send_time_us = ld64(d + 24);
    if (h.payload_length > kMaxPayload) {
        fail(kPayloadTooLarge, "payload_length " + std::to_string(h.payload_length) + " > " + std::to_string(kMaxPayload));
    }
}

bool finish_decode(const Header& h, const uint8_t* payload, size_t n, Message& out) {
    out = Message();
    out.kind = h.kind;
    out.header_version = h.version;
    out.turn_id = h.turn_id;
    out.seq = h.seq;
    out.send_time_us = h.send_time_us;
    parse_payload(h.kind, payload, n, out);
    return true;
}

// Little-endian writer for the encoder.
struct Writer {
    std::vector<uint8_t> b;
    void u8(uint8_t v) { b.push_back(v); }
    void u16(uint16_t v) {
        b.push_back(static_cast<uint8_t>(v));
        b.push_back(static_cast<uint8_t>(v >> 8));
    }
    void u32(uint32_t v) {
        for (int i = 0; i < 4; ++i) b.push_back(static_cast<uint8_t>(v >> (8 * i)));
    }
    void u64(uint64_t v) {
        for (int i = 0; i < 8; ++i) b.push_back(static_cast<uint8_t>(v >> (8 * i)));
    }
    void f32(float f) {
        uint32_t u;
        std::memcpy(&u, &f, 4);
        u32(u);
    }
    void bytes(const std::string& s) { b.insert(b.end(), s.begin(), s.end()); }
};

}  // namespace

const char* kind_name(Kind k) {
    switch (k) {
        case Kind::Hello: return "Hello";
        case Kind::Welcome: return "Welcome";
        case Kind::UserAudio: return "UserAudio";
        case Kind::TextDelta: return "TextDelta";
        case Kind::AudioChunk: return "AudioChunk";
        case Kind::FaceFrames: return "FaceFrames";
        case Kind::TurnEnd: return "TurnEnd";
        case Kind::Cancel: return "Cancel";
        case Kind::Heartbeat: return "Heartbeat";
        case Kind::Error: return "Error";
        case Kind::Bye: return "Bye";
        case Kind::Character: return "Character";
        case Kind::ServerInfo: return "ServerInfo";
        case Kind::ConfigAck: return "ConfigAck";
        case Kind::GameContext: return "GameContext";
        case Kind::UserText: return "UserText";
        case Kind::SetEmotion: return "SetEmotion";
        case Kind::MicAudio: return "MicAudio";
        case Kind::SpeechStarted: return "SpeechStarted";
        case Kind::SpeechEnded: return "SpeechEnded";
        case Kind::BargeIn: return "BargeIn";
    }
    return "?";
}

uint16_t min_version(Kind k) { return static_cast<uint16_t>(k) >= static_cast<uint16_t>(Kind::Character) ? kVersion2 : kVersion; }

int layout_dims(int layout_id) {
    switch (layout_id) {
        case 1: return 58;
        case 2: return 52;
        case 3: return 61;
        default: return 0;
    }
}

bool valid_utf8(const uint8_t* p, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = p[i];
        if (c < 0x80) {
            ++i;
            continue;
        }
        size_t len;
        uint32_t cp;
        if (c >= 0xC2 && c <= 0xDF) {
            len = 2;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            cp = c & 0x07;
        } else {
            return false;  // continuation byte, overlong 2-byte lead (C0, C1) or > F4
        }
        if (n - i < len) return false;
        for (size_t k = 1; k < len; ++k) {
            uint8_t cc = p[i + k];
            if ((cc & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (cc & 0x3F);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF))) return false;  // overlong
        if (cp >= 0xD800 && cp <= 0xDFFF) return false;  // surrogates
        i += len;
    }
    return true;
}

bool decode_header(const uint8_t* data, size_t n, Header& out, DecodeError& err) {
    try {
        header_checks(data, n, out);
        return true;
    } catch (const Fail& f) {
        err.code = f.code;
        err.message = f.message;
        return false;
    } catch (...) {  // std::bad_alloc and friends: never escape
        err.code = kInternal;
        err.message = "out of memory while decoding";
        return false;
    }
}

bool decode(const uint8_t* data, size_t n, Message& out, DecodeError& err) {
    try {
        if (n < kHeaderSize) fail(kBadLength, "message is " + std::to_string(n) + " bytes, shorter than the header");
        Header h;
        header_checks(data, kHeaderSize, h);
        if (n != kHeaderSize + h.payload_length) {
            fail(kBadLength, "payload is " + std::to_string(n - kHeaderSize) + " bytes, header says " +
                                 std::to_string(h.payload_length));
        }
        return finish_decode(h, data + kHeaderSize, n - kHeaderSize, out);
    } catch (const Fail& f) {
        err.code = f.code;
        err.message = f.message;
        return false;
    } catch (...) {
        err.code = kInternal;
        err.message = "out of memory while decoding";
        return false;
    }
}

bool decode_frames(const uint8_t* header, size_t header_len, const uint8_t* payload, size_t payload_len, Message& out,
                   DecodeError& err) {
    try {
        Header h;
        header_checks(header, header_len, h);
        if (payload_len != h.payload_length) {
            fail(kBadLength, "payload frame is " + std::to_string(payload_len) + " bytes, header says " +
                                 std::to_string(h.payload_length));
        }
        return finish_decode(h, payload, payload_len, out);
    } catch (const Fail& f) {
        err.code = f.code;
        err.message = f.message;
        return false;
    } catch (...) {
        err.code = kInternal;
        err.message = "out of memory while decoding";
        return false;
    }
}

void put_u64(uint8_t* p, uint64_t v) {
    for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

std::vector<uint8_t> encode_payload(const Message& m) {
    Writer w;
    switch (m.kind) {
        case Kind::Hello:
            w.u16(m.min_version);
            w.u16(m.max_version);
            w.u32(m.capabilities);
            w.u8(static_cast<uint8_t>(m.layout_ids.size()));
            for (uint8_t id : m.layout_ids) w.u8(id);
            w.u8(static_cast<uint8_t>(m.name.size()));
            w.bytes(m.name);
            break;
        case Kind::Welcome:
            w.u16(m.version);
            w.u16(0);
            w.u32(m.session_id);
            w.u32(m.capabilities);
            w.u32(m.heartbeat_ms);
            w.u32(m.session_timeout_ms);
            w.u32(m.input_sample_rate);
            w.u32(m.output_sample_rate);
            w.f32(m.fps);
            w.u32(m.max_payload);
            w.u8(static_cast<uint8_t>(m.layouts.size()));
            for (const LayoutInfo& lay : m.layouts) {
                w.u8(lay.layout_id);
                w.u16(static_cast<uint16_t>(lay.names.size()));
                for (const std::string& s : lay.names) {
                    w.u8(static_cast<uint8_t>(s.size()));
                    w.bytes(s);
                }
            }
            w.u8(static_cast<uint8_t>(m.name.size()));
            w.bytes(m.name);
            break;
        case Kind::UserAudio:
        case Kind::AudioChunk:
        case Kind::MicAudio: {
            bool pcm = m.audio_format == kPcm16;
            w.u8(pcm ? kPcm16 : kF32);
            uint8_t flags = 0;
            if (m.kind == Kind::UserAudio && m.end_of_utterance) flags = kAudioFlagEndOfUtterance;
            if (m.kind == Kind::MicAudio && m.end_of_stream) flags = kMicFlagEndOfStream;
            w.u8(flags);
            w.u16(1);
            w.u32(m.sample_rate);
            w.u64(m.sample_offset);
            w.u32(static_cast<uint32_t>(m.n_samples()));
            if (pcm) {
                for (int16_t s : m.pcm16) w.u16(static_cast<uint16_t>(s));
            } else {
                for (float s : m.f32) w.f32(s);
            }
            break;
        }
        case Kind::TextDelta:
            w.u32(m.byte_offset);
            w.u32(static_cast<uint32_t>(m.text.size()));
            w.bytes(m.text);
            break;
        case Kind::FaceFrames:
            w.u64(m.first_frame);
            w.f32(m.fps);
            w.u8(m.layout_id);
            w.u8(0);
            w.u16(m.dims);
            w.u32(m.n_frames);
            for (float v : m.values) w.f32(v);
            break;
        case Kind::TurnEnd:
            w.u8(m.status);
            w.u8(0);
            w.u16(0);
            w.f32(m.ttft_s);
            w.f32(m.ttfa_s);
            w.f32(m.first_audio_s);
            w.f32(m.rtf);
            w.f32(m.total_s);
            w.u32(m.text_bytes);
            w.u32(m.text_deltas);
            w.u64(m.audio_samples);
            w.u32(m.audio_chunks);
            w.u32(m.face_frames);
            break;
        case Kind::Heartbeat:
            w.u64(m.time_us);
            w.u64(m.echo_us);
            break;
        case Kind::Error:
            w.u16(m.code);
            w.u16(static_cast<uint16_t>(m.text.size()));
            w.bytes(m.text);
            break;
        case Kind::Cancel:
        case Kind::Bye: break;
        case Kind::Character:
            w.u8(m.emotion_modes);
            w.u8(0);
            w.u16(0);
            w.f32(m.intensity);
            w.u8(static_cast<uint8_t>(m.voice.size()));
            w.bytes(m.voice);
            w.u8(static_cast<uint8_t>(m.emotion.size()));
            w.bytes(m.emotion);
            w.u32(static_cast<uint32_t>(m.persona.size()));
            w.bytes(m.persona);
            break;
        case Kind::ServerInfo:
            w.u32(m.max_persona_chars);
            w.u32(m.max_context_chars);
            w.u32(m.max_text_chars);
            w.u32(m.vad_min_speech_ms);
            w.u32(m.vad_min_silence_ms);
            w.u32(m.vad_barge_in_ms);
            w.u8(static_cast<uint8_t>(m.mic_rates.size()));
            for (uint32_t r : m.mic_rates) w.u32(r);
            for (const std::vector<std::string>* names : {&m.voices, &m.emotions}) {
                w.u8(static_cast<uint8_t>(names->size()));
                for (const std::string& n : *names) {
                    w.u8(static_cast<uint8_t>(n.size()));
                    w.bytes(n);
                }
            }
            break;
        case Kind::ConfigAck:
            w.u16(m.acked_kind);
            w.u16(m.flags);
            break;
        case Kind::GameContext:
        case Kind::UserText:
            w.u32(static_cast<uint32_t>(m.text.size()));
            w.bytes(m.text);
            break;
        case Kind::SetEmotion:
            w.u8(m.scope);
            w.u8(0);
            w.u16(0);
            w.f32(m.intensity);
            w.u8(static_cast<uint8_t>(m.name.size()));
            w.bytes(m.name);
            break;
        case Kind::SpeechStarted:
            w.u64(m.start_sample);
            w.u64(m.detected_sample);
            break;
        case Kind::SpeechEnded:
            w.u64(m.start_sample);
            w.u64(m.end_sample);
            w.u64(m.detected_sample);
            w.u8(m.reason);
            w.u8(0);
            w.u16(0);
            break;
        case Kind::BargeIn:
            w.u64(m.speech_sample);
            w.u64(m.detected_sample);
            break;
    }
    return std::move(w.b);
}

std::array<uint8_t, kHeaderSize> encode_header(const Message& m, uint32_t payload_length) {
    std::array<uint8_t, kHeaderSize> h{};
    std::memcpy(h.data(), "A2LM", 4);
    uint16_t v = std::max(m.header_version, min_version(m.kind));
    h[4] = static_cast<uint8_t>(v);
    h[5] = static_cast<uint8_t>(v >> 8);
    uint16_t k = static_cast<uint16_t>(m.kind);
    h[6] = static_cast<uint8_t>(k);
    h[7] = static_cast<uint8_t>(k >> 8);
    for (int i = 0; i < 4; ++i) h[8 + i] = static_cast<uint8_t>(m.turn_id >> (8 * i));
    for (int i = 0; i < 4; ++i) h[12 + i] = static_cast<uint8_t>(payload_length >> (8 * i));
    put_u64(h.data() + 16, m.seq);
    put_u64(h.data() + 24, m.send_time_us);
    return h;
}

std::vector<uint8_t> encode(const Message& m) {
    std::vector<uint8_t> payload = encode_payload(m);
    std::array<uint8_t, kHeaderSize> h = encode_header(m, static_cast<uint32_t>(payload.size()));
    std::vector<uint8_t> out(kHeaderSize + payload.size());
    std::memcpy(out.data(), h.data(), kHeaderSize);
    if (!payload.empty()) std::memcpy(out.data() + kHeaderSize, payload.data(), payload.size());
    return out;
}

}  // namespace proto
}  // namespace a2llm
