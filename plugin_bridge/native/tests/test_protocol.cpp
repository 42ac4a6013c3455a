// Golden fixtures: every message in plugin_bridge/fixtures/index.json decodes to its listed fields and re-encodes to
// the same bytes; every malformed_*.bin is rejected with its listed ErrorCode; and a deterministic fuzz loop mutates
// the fixtures (bit flips, truncation, extension, length-field rewrites, splices) and checks that decoding never
// crashes and that whatever decodes re-encodes byte for byte.
//
// usage: test_protocol FIXTURES_DIR [FUZZ_ITERATIONS]
#include <algorithm>
#include <cstring>
#include <fstream>
#include <iterator>
#include <cstdlib>
#include <random>

#include "harness.hpp"
#include "protocol.hpp"

using a2llm::proto::Kind;
using a2llm::proto::Message;
using th::Json;

static std::string g_dir;
static long g_fuzz_iterations = 20000;

static std::vector<uint8_t> read_bytes(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw std::runtime_error("cannot read " + path);
    return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

static Json load_index() {
    std::vector<uint8_t> raw = read_bytes(g_dir + "/index.json");
    std::string s(raw.begin(), raw.end());
    return th::JsonParser(s).parse();
}

// Compare a decoded message with the "fields" object of index.json; every key must be known.
static void check_fields(const std::string& file, const Message& m, const Json& fields) {
    auto num = [&](const char* k) { return fields.at(k).num; };
    auto floats = [&](const std::vector<float>& got, const Json& want) {
        CHECK_EQ(got.size(), want.arr.size());
        for (size_t i = 0; i < std::min(got.size(), want.arr.size()); ++i) CHECK_EQ(double(got[i]), want.arr[i].num);
    };
    for (const auto& kv : fields.obj) {
        const std::string& k = kv.first;
        const Json& v = kv.second;
        bool known = true;
        if (k == "min_version") CHECK_EQ(double(m.min_version), v.num);
        else if (k == "max_version") CHECK_EQ(double(m.max_version), v.num);
        else if (k == "capabilities") CHECK_EQ(double(m.capabilities), v.num);
        else if (k == "client_name" || k == "server_name") CHECK_EQ(m.name, v.str);
        else if (k == "layouts" && m.kind == Kind::Hello) {
            CHECK_EQ(m.layout_ids.size(), v.arr.size());
            for (size_t i = 0; i < std::min(m.layout_ids.size(), v.arr.size()); ++i) CHECK_EQ(double(m.layout_ids[i]), v.arr[i].num);
        } else if (k == "layouts" && m.kind == Kind::Welcome) {
            CHECK_EQ(m.layouts.size(), v.arr.size());
            for (size_t i = 0; i < std::min(m.layouts.size(), v.arr.size()); ++i) {
                CHECK_EQ(double(m.layouts[i].layout_id), v.arr[i].at("layout_id").num);
                const Json& names = v.arr[i].at("names");
                CHECK_EQ(m.layouts[i].names.size(), names.arr.size());
                for (size_t j = 0; j < std::min(names.arr.size(), m.layouts[i].names.size()); ++j) {
                    CHECK_EQ(m.layouts[i].names[j], names.arr[j].str);
                }
            }
        } else if (k == "version") CHECK_EQ(double(m.version), v.num);
        else if (k == "session_id") CHECK_EQ(double(m.session_id), v.num);
        else if (k == "heartbeat_ms") CHECK_EQ(double(m.heartbeat_ms), v.num);
        else if (k == "session_timeout_ms") CHECK_EQ(double(m.session_timeout_ms), v.num);
        else if (k == "input_sample_rate") CHECK_EQ(double(m.input_sample_rate), v.num);
        else if (k == "output_sample_rate") CHECK_EQ(double(m.output_sample_rate), v.num);
        else if (k == "max_payload") CHECK_EQ(double(m.max_payload), v.num);
        else if (k == "fps") CHECK_EQ(double(m.fps), v.num);
        else if (k == "samples") {
            if (m.audio_format == a2llm::proto::kPcm16) {
                CHECK_EQ(m.pcm16.size(), v.arr.size());
                for (size_t i = 0; i < std::min(m.pcm16.size(), v.arr.size()); ++i) CHECK_EQ(double(m.pcm16[i]), v.arr[i].num);
            } else {
                floats(m.f32, v);
            }
        } else if (k == "sample_rate") CHECK_EQ(double(m.sample_rate), v.num);
        else if (k == "sample_offset") CHECK_EQ(double(m.sample_offset), v.num);
        else if (k == "end_of_utterance") CHECK_EQ(m.end_of_utterance, v.b);
        else if (k == "byte_offset") CHECK_EQ(double(m.byte_offset), v.num);
        else if (k == "text") CHECK_EQ(m.text, v.str);
        else if (k == "first_frame") CHECK_EQ(double(m.first_frame), v.num);
        else if (k == "layout_id") CHECK_EQ(double(m.layout_id), v.num);
        else if (k == "values") {
            CHECK_EQ(double(m.n_frames), double(v.arr.size()));
            std::vector<float> flat;
            for (const Json& row : v.arr) {
                CHECK_EQ(double(m.dims), double(row.arr.size()));
                for (const Json& x : row.arr) flat.push_back(float(x.num));
            }
            Json want;
            for (float f : flat) {
                Json x;
                x.num = f;
                want.arr.push_back(x);
            }
            floats(m.values, want);
        } else if (k == "status") CHECK_EQ(double(m.status), v.num);
        else if (k == "ttft_s") CHECK_EQ(double(m.ttft_s), v.num);
        else if (k == "ttfa_s") CHECK_EQ(double(m.ttfa_s), v.num);
        else if (k == "first_audio_s") CHECK_EQ(double(m.first_audio_s), v.num);
        else if (k == "rtf") CHECK_EQ(double(m.rtf), v.num);
        else if (k == "total_s") CHECK_EQ(double(m.total_s), v.num);
        else if (k == "text_bytes") CHECK_EQ(double(m.text_bytes), v.num);
        else if (k == "text_deltas") CHECK_EQ(double(m.text_deltas), v.num);
        else if (k == "audio_samples") CHECK_EQ(double(m.audio_samples), v.num);
        else if (k == "audio_chunks") CHECK_EQ(double(m.audio_chunks), v.num);
        else if (k == "face_frames") CHECK_EQ(double(m.face_frames), v.num);
        else if (k == "time_us") CHECK_EQ(double(m.time_us), v.num);
        else if (k == "echo_us") CHECK_EQ(double(m.echo_us), v.num);
        else if (k == "code") CHECK_EQ(double(m.code), v.num);
        else if (k == "message") CHECK_EQ(m.text, v.str);
        // version 2 (PROTOCOL.md 10)
        else if (k == "emotion_modes") CHECK_EQ(double(m.emotion_modes), v.num);
        else if (k == "intensity") CHECK_EQ(double(m.intensity), v.num);
        else if (k == "voice") CHECK_EQ(m.voice, v.str);
        else if (k == "emotion") CHECK_EQ(m.emotion, v.str);
        else if (k == "persona") CHECK_EQ(m.persona, v.str);
        else if (k == "scope") CHECK_EQ(double(m.scope), v.num);
        else if (k == "name") CHECK_EQ(m.name, v.str);
        else if (k == "max_persona_chars") CHECK_EQ(double(m.max_persona_chars), v.num);
        else if (k == "max_context_chars") CHECK_EQ(double(m.max_context_chars), v.num);
        else if (k == "max_text_chars") CHECK_EQ(double(m.max_text_chars), v.num);
        else if (k == "vad_min_speech_ms") CHECK_EQ(double(m.vad_min_speech_ms), v.num);
        else if (k == "vad_min_silence_ms") CHECK_EQ(double(m.vad_min_silence_ms), v.num);
        else if (k == "vad_barge_in_ms") CHECK_EQ(double(m.vad_barge_in_ms), v.num);
        else if (k == "mic_rates") {
            CHECK_EQ(m.mic_rates.size(), v.arr.size());
            for (size_t i = 0; i < std::min(m.mic_rates.size(), v.arr.size()); ++i) CHECK_EQ(double(m.mic_rates[i]), v.arr[i].num);
        } else if (k == "voices" || k == "emotions") {
            const std::vector<std::string>& got = k == "voices" ? m.voices : m.emotions;
            CHECK_EQ(got.size(), v.arr.size());
            for (size_t i = 0; i < std::min(got.size(), v.arr.size()); ++i) CHECK_EQ(got[i], v.arr[i].str);
        } else if (k == "acked_kind") CHECK_EQ(double(m.acked_kind), v.num);
        else if (k == "flags") CHECK_EQ(double(m.flags), v.num);
        else if (k == "end_of_stream") CHECK_EQ(m.end_of_stream, v.b);
        else if (k == "start_sample") CHECK_EQ(double(m.start_sample), v.num);
        else if (k == "end_sample") CHECK_EQ(double(m.end_sample), v.num);
        else if (k == "detected_sample") CHECK_EQ(double(m.detected_sample), v.num);
        else if (k == "speech_sample") CHECK_EQ(double(m.speech_sample), v.num);
        else if (k == "reason") CHECK_EQ(double(m.reason), v.num);
        else known = false;
        if (!known) th::fail(__FILE__, __LINE__, file + ": unknown field '" + k + "' in index.json");
    }
    (void)num;
}

TEST(golden_messages_decode_to_their_fields) {
    Json index = load_index();
    CHECK_EQ(index.at("protocol_version").num, 1.0);
    CHECK_EQ(index.at("header_size").num, 32.0);
    CHECK_EQ(index.at("max_payload").num, double(a2llm::proto::kMaxPayload));
    const Json& msgs = index.at("messages");
    CHECK(msgs.arr.size() >= 11);
    std::vector<int> kinds_seen(a2llm::proto::kMaxKind + 1, 0);
    for (const Json& e : msgs.arr) {
        const std::string file = e.at("file").str;
        std::vector<uint8_t> b = read_bytes(g_dir + "/" + file);
        CHECK_EQ(double(b.size()), e.at("size").num);
        Message m;
        a2llm::proto::DecodeError err;
        bool ok = a2llm::proto::decode(b.data(), b.size(), m, err);
        if (!ok) {
            th::fail(__FILE__, __LINE__, file + ": " + err.message);
            continue;
        }
        CHECK_EQ(double(static_cast<int>(m.kind)), e.at("kind").num);
        CHECK_EQ(std::string(a2llm::proto::kind_name(m.kind)), e.at("class").str);
        CHECK_EQ(double(m.turn_id), e.at("turn_id").num);
        CHECK_EQ(double(m.seq), e.at("seq").num);
        CHECK_EQ(double(m.send_time_us), e.at("send_time_us").num);
        CHECK_EQ(double(m.header_version), e.at("version").num);
        check_fields(file, m, e.at("fields"));
        kinds_seen[static_cast<int>(m.kind)] = 1;

        // the two-frame path agrees
        Message m2;
        CHECK(a2llm::proto::decode_frames(b.data(), 32, b.data() + 32, b.size() - 32, m2, err));
        // re-encoding gives the same bytes
        std::vector<uint8_t> again = a2llm::proto::encode(m);
        if (again != b) th::fail(__FILE__, __LINE__, file + ": re-encoding differs from the fixture");
    }
    for (int k = 1; k <= a2llm::proto::kMaxKind; ++k) {
        if (!kinds_seen[k]) th::fail(__FILE__, __LINE__, "no golden fixture for kind " + std::to_string(k));
    }
}

TEST(malformed_fixtures_are_rejected_with_their_code) {
    Json index = load_index();
    const Json& bad = index.at("malformed");
    CHECK(bad.arr.size() >= 10);
    for (const Json& e : bad.arr) {
        const std::string file = e.at("file").str;
        std::vector<uint8_t> b = read_bytes(g_dir + "/" + file);
        Message m;
        a2llm::proto::DecodeError err;
        bool ok = a2llm::proto::decode(b.data(), b.size(), m, err);
        if (ok) {
            th::fail(__FILE__, __LINE__, file + " decoded but must be rejected");
            continue;
        }
        if (double(err.code) != e.at("error_code").num) {
            th::fail(__FILE__, __LINE__,
                     file + ": code " + std::to_string(err.code) + " (" + err.message + "), expected " + e.at("error_name").str);
        }
        CHECK(!err.message.empty());
    }
}

TEST(frames_path_checks_lengths) {
    std::vector<uint8_t> b = read_bytes(g_dir + "/heartbeat.bin");
    Message m;
    a2llm::proto::DecodeError err;
    CHECK(!a2llm::proto::decode_frames(b.data(), 31, b.data() + 31, b.size() - 31, m, err));
    CHECK_EQ(err.code, uint16_t(a2llm::proto::kBadLength));
    CHECK(!a2llm::proto::decode_frames(b.data(), 32, b.data() + 32, b.size() - 33, m, err));
    CHECK_EQ(err.code, uint16_t(a2llm::proto::kBadLength));
    CHECK(!a2llm::proto::decode(b.data(), 0, m, err));
}

TEST(utf8_validation_matches_python) {
    auto ok = [](std::initializer_list<int> bytes) {
        std::vector<uint8_t> v;
        for (int x : bytes) v.push_back(static_cast<uint8_t>(x));
        return a2llm::proto::valid_utf8(v.data(), v.size());
    };
    CHECK(ok({'a', 0xC3, 0xBC}));               // ü
    CHECK(ok({0xF0, 0x9F, 0x91, 0x8B}));        // 👋
    CHECK(ok({0x00}));                          // NUL is valid UTF-8
    CHECK(!ok({0xC3, 0x28}));
    CHECK(!ok({0xC0, 0x80}));                   // overlong
    CHECK(!ok({0xE0, 0x80, 0x80}));             // overlong
    CHECK(!ok({0xED, 0xA0, 0x80}));             // surrogate
    CHECK(!ok({0xF4, 0x90, 0x80, 0x80}));       // > U+10FFFF
    CHECK(!ok({0xF0, 0x9F, 0x91}));             // truncated
    CHECK(!ok({0x80}));
}

// Mutations of valid messages must never crash; what still decodes must re-encode to exactly the same bytes.
TEST(fuzz_mutated_fixtures_never_crash) {
    Json index = load_index();
    std::vector<std::vector<uint8_t>> corpus;
    for (const Json& e : index.at("messages").arr) corpus.push_back(read_bytes(g_dir + "/" + e.at("file").str));
    for (const Json& e : index.at("malformed").arr) corpus.push_back(read_bytes(g_dir + "/" + e.at("file").str));
    std::mt19937_64 rng(20240611);
    auto rnd = [&](uint64_t n) { return n == 0 ? 0 : rng() % n; };
    long accepted = 0, rejected = 0;
    std::vector<long> codes(40, 0);
    for (long it = 0; it < g_fuzz_iterations; ++it) {
        std::vector<uint8_t> b = corpus[rnd(corpus.size())];
        int n_mut = 1 + static_cast<int>(rnd(4));
        for (int k = 0; k < n_mut; ++k) {
            switch (rnd(8)) {
                case 0:  // flip a bit
                    if (!b.empty()) b[rnd(b.size())] ^= static_cast<uint8_t>(1u << rnd(8));
                    break;
                case 1:  // random byte
                    if (!b.empty()) b[rnd(b.size())] = static_cast<uint8_t>(rng());
                    break;
                case 2:  // truncate
                    b.resize(rnd(b.size() + 1));
                    break;
                case 3:  // extend
                    for (uint64_t i = 0, n = 1 + rnd(16); i < n; ++i) b.push_back(static_cast<uint8_t>(rng()));
                    break;
                case 4: {  // rewrite a u32 in the payload (counts, lengths) with an interesting value
                    if (b.size() >= 36) {
                        static const uint32_t vals[] = {0, 1, 2, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 4194304, 61};
                        size_t pos = 32 + rnd(b.size() - 35);
                        uint32_t v = vals[rnd(9)];
                        std::memcpy(&b[pos], &v, 4);
                    }
                    break;
                }
                case 5:  // fix the header's payload_length to the actual size (reaches the payload parsers)
                    if (b.size() >= 32) {
                        uint32_t len = static_cast<uint32_t>(b.size() - 32);
                        std::memcpy(&b[12], &len, 4);
                    }
                    break;
                case 6: {  // splice a piece of another message
                    const std::vector<uint8_t>& o = corpus[rnd(corpus.size())];
                    if (!o.empty() && !b.empty()) {
                        size_t from = rnd(o.size()), len = rnd(std::min<size_t>(64, o.size() - from) + 1);
                        size_t to = rnd(b.size());
                        b.erase(b.begin() + static_cast<long>(to), b.begin() + static_cast<long>(std::min(b.size(), to + len)));
                        b.insert(b.begin() + static_cast<long>(to), o.begin() + static_cast<long>(from),
                                 o.begin() + static_cast<long>(from + len));
                    }
                    break;
                }
                default:  // a NaN / inf float somewhere in the payload
                    if (b.size() >= 36) {
                        float f = rnd(2) ? NAN : INFINITY;
                        std::memcpy(&b[32 + rnd(b.size() - 35)], &f, 4);
                    }
                    break;
            }
        }
        if (rnd(2) && b.size() >= 32) {  // keep the length field consistent half of the time
            uint32_t len = static_cast<uint32_t>(b.size() - 32);
            std::memcpy(&b[12], &len, 4);
        }
        Message m;
        a2llm::proto::DecodeError err;
        if (a2llm::proto::decode(b.data(), b.size(), m, err)) {
            ++accepted;
            if (a2llm::proto::encode(m) != b) th::fail(__FILE__, __LINE__, "accepted bytes do not re-encode identically");
        } else {
            ++rejected;
            if (err.code == 0 || err.code >= 40 || err.message.empty()) th::fail(__FILE__, __LINE__, "bad error report");
            if (err.code < 40) ++codes[err.code];
        }
    }
    std::fprintf(stderr, "  fuzz: %ld iterations, %ld accepted, %ld rejected; codes:", g_fuzz_iterations, accepted, rejected);
    for (int c = 1; c < 10; ++c) std::fprintf(stderr, " %d:%ld", c, codes[c]);
    std::fprintf(stderr, "\n");
    CHECK(accepted > 0);
    CHECK(rejected > 0);
    for (int c = 1; c <= 8; ++c) CHECK(codes[c] > 0);  // every decoding error class was reached
}

// Cases written by tests/plugin_bridge/test_native.py: u32 count, then per case u32 length, u16 code (0 = protocol.py
// accepts it, else its ErrorCode), the bytes. The C++ decoder must agree on every one.
static int run_parity(const char* path) {
    std::vector<uint8_t> blob = read_bytes(path);
    size_t pos = 0;
    auto u32 = [&]() {
        if (pos + 4 > blob.size()) throw std::runtime_error("parity file truncated");
        uint32_t v = blob[pos] | (blob[pos + 1] << 8) | (blob[pos + 2] << 16) | (uint32_t(blob[pos + 3]) << 24);
        pos += 4;
        return v;
    };
    uint32_t n = u32();
    int mismatches = 0;
    for (uint32_t i = 0; i < n; ++i) {
        uint32_t len = u32();
        if (pos + 2 + len > blob.size()) throw std::runtime_error("parity file truncated");
        uint16_t want = static_cast<uint16_t>(blob[pos] | (blob[pos + 1] << 8));
        pos += 2;
        const uint8_t* b = blob.data() + pos;
        pos += len;
        Message m;
        a2llm::proto::DecodeError err;
        bool ok = a2llm::proto::decode(b, len, m, err);
        uint16_t got = ok ? 0 : err.code;
        if (got != want || (ok && a2llm::proto::encode(m) != std::vector<uint8_t>(b, b + len))) {
            if (++mismatches <= 10) {
                std::fprintf(stderr, "  case %u (%u bytes, kind %d): C++ %u (%s), protocol.py %u\n", i, len,
                             len >= 8 ? int(b[6] | (b[7] << 8)) : -1, got, ok ? "accepted" : err.message.c_str(), want);
            }
        }
    }
    std::fprintf(stderr, "parity: %u cases, %d mismatches\n", n, mismatches);
    if (mismatches == 0) std::fprintf(stderr, "0 failed checks\n");
    return mismatches == 0 ? 0 : 1;
}

int main(int argc, char** argv) {
    if (argc >= 3 && std::string(argv[2]) == "--parity") {
        const char* path = std::getenv("A2LLM_PARITY_FILE");
        if (path == nullptr || *path == '\0') {
            std::fprintf(stderr, "skipped: A2LLM_PARITY_FILE is not set (tests/plugin_bridge/test_native.py sets it)\n");
            return 77;
        }
        try {
            return run_parity(path);
        } catch (const std::exception& e) {
            std::fprintf(stderr, "parity: %s\n", e.what());
            return 1;
        }
    }
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s FIXTURES_DIR [FUZZ_ITERATIONS]\n", argv[0]);
        return 2;
    }
    g_dir = argv[1];
    if (argc > 2) g_fuzz_iterations = std::atol(argv[2]);
    return th::run_all();
}
