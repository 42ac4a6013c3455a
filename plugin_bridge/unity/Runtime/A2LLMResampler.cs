// Streaming mono resampler used at the engine boundary: answer audio 24 kHz -> AudioSettings.outputSampleRate, and
// microphone rate -> 16 kHz. Linear interpolation at exact rational positions (output j sits at input position
// j * inRate / outRate, computed in integers, so there is no drift over hours); when downsampling, a 2nd-order
// Butterworth low-pass at 0.45 * outRate runs first against aliasing. Stateful: feeding the input in any chunking
// gives exactly the same output as feeding it at once. Not thread-safe: one thread (the audio thread or the game
// thread) owns an instance.
using System;

namespace A2LLM
{
    public sealed class A2LLMResampler
    {
        public readonly int InputRate;
        public readonly int OutputRate;

        private float[] _buf = new float[1024];
        private int _count; // valid samples in _buf
        private long _bufStart; // absolute input index of _buf[0]
        private long _outIndex; // next output sample index

        // low-pass (direct form I biquad), only when OutputRate < InputRate
        private readonly bool _lowPass;
        private readonly float _b0, _b1, _b2, _a1, _a2;
        private float _x1, _x2, _y1, _y2;

        public A2LLMResampler(int inputRate, int outputRate)
        {
            if (inputRate <= 0 || outputRate <= 0) throw new ArgumentException("sample rates must be positive");
            InputRate = inputRate;
            OutputRate = outputRate;
            if (outputRate < inputRate)
            {
                // RBJ cookbook low-pass, Q = 1/sqrt(2) (Butterworth).
                double w0 = 2 * Math.PI * 0.45 * outputRate / inputRate;
                double alpha = Math.Sin(w0) / (2 * Math.Sqrt(0.5));
                double cos = Math.Cos(w0);
                double a0 = 1 + alpha;
                _b0 = (float)((1 - cos) / 2 / a0);
                _b1 = (float)((1 - cos) / a0);
                _b2 = _b0;
                _a1 = (float)(-2 * cos / a0);
                _a2 = (float)((1 - alpha) / a0);
                _lowPass = true;
            }
        }

        /// <summary>Output samples produced so far.</summary>
        public long OutputPosition
        {
            get { return _outIndex; }
        }

        /// <summary>Input position (in input samples, fractional) of the next output sample.</summary>
        public double InputPosition
        {
            get { return (double)_outIndex * InputRate / OutputRate; }
        }

        /// <summary>Input samples pushed so far.</summary>
        public long InputPushed
        {
            get { return _bufStart + _count; }
        }

        // Highest input index output j reads (j sits between floor and floor + 1 unless it is exactly on a sample).
        private long LastInputFor(long j)
        {
            long num = j * InputRate;
            long i = num / OutputRate;
            return num % OutputRate == 0 ? i : i + 1;
        }

        /// <summary>How many more input samples must be pushed before outputCount outputs can be produced.</summary>
        public int InputNeededFor(int outputCount)
        {
            if (outputCount <= 0) return 0;
            long need = LastInputFor(_outIndex + outputCount - 1) + 1 - InputPushed;
            return need > 0 ? (int)need : 0;
        }

        /// <summary>Outputs that can be produced from the input pushed so far.</summary>
        public int Available
        {
            get
            {
                long pushed = InputPushed;
                if (pushed == 0) return 0;
                // largest j with LastInputFor(j) <= pushed - 1
                long last = pushed - 1;
                long jMax = (last * OutputRate) / InputRate; // position <= last
                if (jMax < _outIndex) return 0;
                return (int)Math.Min(int.MaxValue, jMax - _outIndex + 1);
            }
        }

        public void Push(float[] src, int offset, int count)
        {
            if (count <= 0) return;
            if (offset < 0 || offset + count > src.Length) throw new ArgumentOutOfRangeException("count");
            Compact();
            if (_count + count > _buf.Length)
            {
                var nb = new float[Math.Max(_buf.Length * 2, _count + count)];
                Array.Copy(_buf, nb, _count);
                _buf = nb;
            }
            if (_lowPass)
            {
                for (int k = 0; k < count; k++)
                {
                    float x = src[offset + k];
                    float y = _b0 * x + _b1 * _x1 + _b2 * _x2 - _a1 * _y1 - _a2 * _y2;
                    _x2 = _x1;
                    _x1 = x;
                    _y2 = _y1;
                    _y1 = y;
                    _buf[_count + k] = y;
                }
            }
            else
            {
                Array.Copy(src, offset, _buf, _count, count);
            }
            _count += count;
        }

        /// <summary>Writes up to maxCount outputs into dst[offset..]; returns how many were written.</summary>
        public int Produce(float[] dst, int offset, int maxCount)
        {
            if (maxCount < 0 || offset < 0 || offset + maxCount > dst.Length) throw new ArgumentOutOfRangeException("maxCount");
            int n = Math.Min(maxCount, Available);
            for (int k = 0; k < n; k++)
            {
                long num = _outIndex * InputRate;
                long i = num / OutputRate;
                long rem = num % OutputRate;
                int bi = (int)(i - _bufStart);
                float s0 = _buf[bi];
                dst[offset + k] = rem == 0 ? s0 : s0 + (_buf[bi + 1] - s0) * ((float)rem / OutputRate);
                _outIndex++;
            }
            return n;
        }

        public void Reset()
        {
            _count = 0;
            _bufStart = 0;
            _outIndex = 0;
            _x1 = _x2 = _y1 = _y2 = 0;
        }

        // Drop input samples no future output reads.
        private void Compact()
        {
            long keepFrom = (_outIndex * InputRate) / OutputRate;
            int drop = (int)Math.Min(_count, Math.Max(0, keepFrom - _bufStart));
            if (drop <= 0) return;
            Array.Copy(_buf, drop, _buf, 0, _count - drop);
            _count -= drop;
            _bufStart += drop;
        }
    }
}
