// A tiny test harness: CHECK / CHECK_EQ record failures and go on; TEST registers a case; run_all() returns the exit
// code (0 = all passed). Also a minimal JSON reader for fixtures/index.json.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace th {

struct Case {
    const char* name;
    std::function<void()> fn;
};
inline std::vector<Case>& cases() {
    static std::vector<Case> c;
    return c;
}
inline int& failures() {
    static int f = 0;
    return f;
}
struct Register {
    Register(const char* name, std::function<void()> fn) { cases().push_back({name, std::move(fn)}); }
};

inline void fail(const char* file, int line, const std::string& what) {
    ++failures();
    if (failures() <= 50) std::fprintf(stderr, "  FAIL %s:%d: %s\n", file, line, what.c_str());
}

template <typename A, typename B>
std::string show(const A& a, const B& b) {
    std::ostringstream os;
    os.precision(17);
    os << a << " != " << b;
    return os.str();
}

inline int run_all() {
    for (auto& c : cases()) {
        int before = failures();
        try {
            c.fn();
        } catch (const std::exception& e) {
            fail(__FILE__, __LINE__, std::string("exception: ") + e.what());
        }
        std::fprintf(stderr, "%s %s\n", failures() == before ? "ok  " : "FAIL", c.name);
    }
    std::fprintf(stderr, "%zu cases, %d failed checks\n", cases().size(), failures());
    return failures() == 0 ? 0 : 1;
}

// --- minimal JSON ------------------------------------------------------------------------------------------------
struct Json {
    enum Type { Null, Bool, Number, String, Array, Object } type = Null;
    bool b = false;
    double num = 0;
    std::string str;
    std::vector<Json> arr;
    std::vector<std::pair<std::string, Json>> obj;  // keeps file order

    const Json* find(const std::string& k) const {
        for (auto& kv : obj) {
            if (kv.first == k) return &kv.second;
        }
        return nullptr;
    }
    const Json& at(const std::string& k) const {
        const Json* j = find(k);
        if (!j) throw std::runtime_error("JSON key missing: " + k);
        return *j;
    }
};

class JsonParser {
public:
    explicit JsonParser(const std::string& s) : s_(s) {}
    Json parse() {
        Json j = value();
        ws();
        if (i_ != s_.size()) err("trailing characters");
        return j;
    }

private:
    [[noreturn]] void err(const char* m) { throw std::runtime_error(std::string("JSON: ") + m + " at " + std::to_string(i_)); }
    void ws() {
        while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\n' || s_[i_] == '\r' || s_[i_] == '\t')) ++i_;
    }
    bool eat(const char* lit) {
        size_t n = std::char_traits<char>::length(lit);
        if (s_.compare(i_, n, lit) == 0) {
            i_ += n;
            return true;
        }
        return false;
    }
    static void put_utf8(std::string& o, uint32_t cp) {
        if (cp < 0x80) {
            o += static_cast<char>(cp);
        } else if (cp < 0x800) {
            o += static_cast<char>(0xC0 | (cp >> 6));
            o += static_cast<char>(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
            o += static_cast<char>(0xE0 | (cp >> 12));
            o += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            o += static_cast<char>(0x80 | (cp & 0x3F));
        } else {
            o += static_cast<char>(0xF0 | (cp >> 18));
            o += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
            o += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            o += static_cast<char>(0x80 | (cp & 0x3F));
        }
    }
    uint32_t hex4() {
        if (i_ + 4 > s_.size()) err("short \\u escape");
        uint32_t v = static_cast<uint32_t>(std::stoul(s_.substr(i_, 4), nullptr, 16));
        i_ += 4;
        return v;
    }
    std::string string() {
        ++i_;  // opening quote
        std::string o;
        while (i_ < s_.size() && s_[i_] != '"') {
            char c = s_[i_++];
            if (c != '\\') {
                o += c;
                continue;
            }
            char e = s_[i_++];
            switch (e) {
                case 'n': o += '\n'; break;
                case 't': o += '\t'; break;
                case 'r': o += '\r'; break;
                case 'b': o += '\b'; break;
                case 'f': o += '\f'; break;
                case 'u': {
                    uint32_t cp = hex4();
                    if (cp >= 0xD800 && cp < 0xDC00 && s_.compare(i_, 2, "\\u") == 0) {
                        i_ += 2;
                        uint32_t lo = hex4();
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    }
                    put_utf8(o, cp);
                    break;
                }
                default: o += e;
            }
        }
        if (i_ >= s_.size()) err("unterminated string");
        ++i_;
        return o;
    }
    Json value() {
        ws();
        if (i_ >= s_.size()) err("unexpected end");
        Json j;
        char c = s_[i_];
        if (c == '{') {
            j.type = Json::Object;
            ++i_;
            ws();
            if (s_[i_] == '}') {
                ++i_;
                return j;
            }
            for (;;) {
                ws();
                std::string k = string();
                ws();
                if (s_[i_++] != ':') err("expected ':'");
                j.obj.emplace_back(k, value());
                ws();
                if (s_[i_] == ',') {
                    ++i_;
                    continue;
                }
                if (s_[i_++] != '}') err("expected '}'");
                return j;
            }
        }
        if (c == '[') {
            j.type = Json::Array;
            ++i_;
            ws();
            if (s_[i_] == ']') {
                ++i_;
                return j;
            }
            for (;;) {
                j.arr.push_back(value());
                ws();
                if (s_[i_] == ',') {
                    ++i_;
                    continue;
                }
                if (s_[i_++] != ']') err("expected ']'");
                return j;
            }
        }
        if (c == '"') {
            j.type = Json::String;
            j.str = string();
            return j;
        }
        if (eat("true")) {
            j.type = Json::Bool;
            j.b = true;
            return j;
        }
        if (eat("false")) {
            j.type = Json::Bool;
            return j;
        }
        if (eat("null")) return j;
        if (eat("NaN")) {
            j.type = Json::Number;
            j.num = NAN;
            return j;
        }
        size_t used = 0;
        j.type = Json::Number;
        j.num = std::stod(s_.substr(i_, 40), &used);
        if (used == 0) err("bad number");
        i_ += used;
        return j;
    }
    const std::string& s_;
    size_t i_ = 0;
};

}  // namespace th

#define TEST(name)                                                  \
    static void name();                                             \
    static th::Register reg_##name(#name, name);                    \
    static void name()
#define CHECK(cond)                                                 \
    do {                                                            \
        if (!(cond)) th::fail(__FILE__, __LINE__, #cond);           \
    } while (0)
#define CHECK_EQ(a, b)                                                        \
    do {                                                                      \
        auto va_ = (a);                                                       \
        auto vb_ = (b);                                                       \
        if (!(va_ == vb_)) th::fail(__FILE__, __LINE__, #a " == " #b ": " + th::show(va_, vb_)); \
    } while (0)
#define CHECK_NEAR(a, b, tol)                                                                       \
    do {                                                                                            \
        double va_ = (a), vb_ = (b);                                                                \
        if (!(std::fabs(va_ - vb_) <= (tol))) th::fail(__FILE__, __LINE__, #a " ~ " #b ": " + th::show(va_, vb_)); \
    } while (0)
