// A small JSON reader/writer for the proto3 JSON mapping: what the generated messages (Messages.g.cs)
// and the Connect error bodies need, nothing more. No reflection, no external packages, C# 7.2.
// Owns text <-> tree only; field names and types belong to the generated code.
using System;
using System.Collections.Generic;
using System.Globalization;
using System.Numerics;
using System.Text;

namespace Psyserve.Client
{
    /// <summary>A message that writes itself as proto3 JSON (every generated class).</summary>
    public interface IMessage
    {
        void WriteJson(JsonWriter w);
    }

    /// <summary>A JSON number kept as its text, so int64 values keep every digit.</summary>
    public sealed class JsonNumber
    {
        public readonly string Text;
        public JsonNumber(string text) { Text = text; }
        public override string ToString() { return Text; }
    }

    /// <summary>The JSON text was malformed or a value had the wrong type for its field.</summary>
    public sealed class JsonException : FormatException
    {
        public JsonException(string message) : base(message) { }
    }

    /// <summary>
    /// Parses JSON into a tree of Dictionary&lt;string, object&gt;, List&lt;object&gt;, string,
    /// JsonNumber, bool and null; converts tree values to field types the proto3 JSON way
    /// (int64 as string or number, doubles also as "NaN"/"Infinity"/"-Infinity", enums by name or number).
    /// </summary>
    public static class Json
    {
        const int MaxDepth = 100;

        public static string Serialize(IMessage message)
        {
            var w = new JsonWriter();
            message.WriteJson(w);
            return w.ToString();
        }

        public static object Parse(string text)
        {
            if (text == null) throw new ArgumentNullException("text");
            var p = new Parser(text);
            p.SkipSpace();
            var value = p.Value(0);
            p.SkipSpace();
            if (p.Pos != text.Length) throw p.Error("trailing characters");
            return value;
        }

        // ------------------------------------------------------------ tree -> field values

        public static Dictionary<string, object> AsObject(object node, string field)
        {
            if (node == null) return null;
            var obj = node as Dictionary<string, object>;
            if (obj == null) throw new JsonException(field + ": expected a JSON object");
            return obj;
        }

        public static List<object> AsArray(object node, string field)
        {
            if (node == null) return new List<object>();
            var list = node as List<object>;
            if (list == null) throw new JsonException(field + ": expected a JSON array");
            return list;
        }

        static string NumberText(object node, string field)
        {
            var n = node as JsonNumber;
            if (n != null) return n.Text;
            var s = node as string;
            if (s != null) return s;
            throw new JsonException(field + ": expected a number");
        }

        public static long ToInt64(object node, string field)
        {
            if (node == null) return 0;
            var text = NumberText(node, field);
            long v;
            if (long.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out v)) return v;
            double d;  // 1e3 or 5.0 are valid JSON for an integer field
            if (double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out d) && d == Math.Floor(d)
                && d >= -9.2233720368547758E18 && d < 9.2233720368547758E18)
                return (long)d;
            throw new JsonException(field + ": not an int64: " + text);
        }

        public static ulong ToUInt64(object node, string field)
        {
            if (node == null) return 0;
            var text = NumberText(node, field);
            ulong v;
            if (ulong.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out v)) return v;
            throw new JsonException(field + ": not a uint64: " + text);
        }

        public static int ToInt32(object node, string field)
        {
            long v = ToInt64(node, field);
            if (v < int.MinValue || v > int.MaxValue) throw new JsonException(field + ": out of int32 range: " + v);
            return (int)v;
        }

        public static uint ToUInt32(object node, string field)
        {
            long v = ToInt64(node, field);
            if (v < 0 || v > uint.MaxValue) throw new JsonException(field + ": out of uint32 range: " + v);
            return (uint)v;
        }

        public static double ToDouble(object node, string field)
        {
            if (node == null) return 0;
            var text = NumberText(node, field);
            switch (text)
            {
                case "NaN": return double.NaN;
                case "Infinity": return double.PositiveInfinity;
                case "-Infinity": return double.NegativeInfinity;
            }
            double d;
            if (TryParseDouble(text, out d)) return d;
            throw new JsonException(field + ": not a number: " + text);
        }

        /// <summary>
        /// Decimal text -> the nearest double (round half to even). Exact, unlike double.Parse on Mono /
        /// .NET Framework, which is off by one unit in the last place for some 16-17 digit inputs: a
        /// value must survive server -> client -> server unchanged.
        /// </summary>
        public static bool TryParseDouble(string text, out double value)
        {
            value = 0;
            int i = 0, n = text.Length;
            bool negative = false;
            if (i < n && (text[i] == '-' || text[i] == '+')) negative = text[i++] == '-';
            var digits = new StringBuilder();
            int fracDigits = 0, intDigits = 0;
            while (i < n && text[i] >= '0' && text[i] <= '9') { digits.Append(text[i++]); intDigits++; }
            if (i < n && text[i] == '.')
            {
                i++;
                while (i < n && text[i] >= '0' && text[i] <= '9') { digits.Append(text[i++]); fracDigits++; }
            }
            if (intDigits + fracDigits == 0) return false;
            long exp = 0;
            if (i < n && (text[i] == 'e' || text[i] == 'E'))
            {
                i++;
                bool expNegative = false;
                if (i < n && (text[i] == '-' || text[i] == '+')) expNegative = text[i++] == '-';
                int start = i;
                while (i < n && text[i] >= '0' && text[i] <= '9')
                {
                    if (exp < 100000) exp = exp * 10 + (text[i] - '0');
                    i++;
                }
                if (i == start) return false;
                if (expNegative) exp = -exp;
            }
            if (i != n) return false;
            var mantissa = digits.ToString().TrimStart('0');
            long e10 = exp - fracDigits;
            if (mantissa.Length == 0 || e10 + mantissa.Length < -400) { value = negative ? -0.0 : 0.0; return true; }
            if (e10 + mantissa.Length > 400) { value = negative ? double.NegativeInfinity : double.PositiveInfinity; return true; }
            if (mantissa.Length <= 15 && e10 >= -22 && e10 <= 22)
            {
                // Clinger's fast path: both operands exact, one correctly rounded IEEE operation
                double m = long.Parse(mantissa, CultureInfo.InvariantCulture);
                value = e10 >= 0 ? m * Pow10[e10] : m / Pow10[-e10];
            }
            else value = Exact(BigInteger.Parse(mantissa, CultureInfo.InvariantCulture), (int)e10);
            if (negative) value = -value;
            return true;
        }

        static readonly double[] Pow10 =
        {
            1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
            1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
        };

        static double Exact(BigInteger m, int e10)
        {
            BigInteger num = m, den = BigInteger.One;
            if (e10 >= 0) num *= BigInteger.Pow(10, e10); else den = BigInteger.Pow(10, -e10);
            // value = num / den = q * 2^k with 2^52 <= q < 2^53 (normal) or k = -1074 (subnormal)
            int k = BitLength(num) - BitLength(den) - 53;
            BigInteger q, r, d;
            while (true)
            {
                if (k < -1074) k = -1074;
                BigInteger a = num, b = den;
                if (k >= 0) b <<= k; else a <<= -k;
                q = BigInteger.DivRem(a, b, out r);
                d = b;
                if (q >= TwoTo53) { k++; continue; }
                if (q < TwoTo52 && k > -1074) { k--; continue; }
                break;
            }
            int cmp = (r * 2).CompareTo(d);
            if (cmp > 0 || (cmp == 0 && !q.IsEven)) q += 1;
            if (q == TwoTo53) { q >>= 1; k++; }
            if (k > 1023 - 52) return double.PositiveInfinity;
            long bits = q < TwoTo52 ? (long)q : ((long)(k + 52 + 1023) << 52) | ((long)q & 0xFFFFFFFFFFFFFL);
            return BitConverter.Int64BitsToDouble(bits);
        }

        static readonly BigInteger TwoTo52 = BigInteger.One << 52;
        static readonly BigInteger TwoTo53 = BigInteger.One << 53;

        static int BitLength(BigInteger x)
        {
            var bytes = x.ToByteArray();  // little-endian, with a sign byte when needed
            int top = bytes.Length - 1;
            while (top > 0 && bytes[top] == 0) top--;
            int bits = top * 8, b = bytes[top];
            while (b != 0) { bits++; b >>= 1; }
            return bits;
        }

        public static float ToFloat(object node, string field) { return (float)ToDouble(node, field); }

        public static bool ToBool(object node, string field)
        {
            if (node == null) return false;
            if (node is bool) return (bool)node;
            throw new JsonException(field + ": expected true or false");
        }

        public static string ToStr(object node, string field)
        {
            if (node == null) return "";
            var s = node as string;
            if (s == null) throw new JsonException(field + ": expected a string");
            return s;
        }

        public static byte[] ToBytes(object node, string field)
        {
            if (node == null) return new byte[0];
            return Base64Decode(ToStr(node, field));
        }

        /// <summary>Standard or URL-safe base64, padded or not (Connect and proto3 JSON accept all four).</summary>
        public static byte[] Base64Decode(string text)
        {
            var s = text.Replace('-', '+').Replace('_', '/');
            switch (s.Length % 4)
            {
                case 2: s += "=="; break;
                case 3: s += "="; break;
            }
            return Convert.FromBase64String(s);
        }

        // ------------------------------------------------------------ text -> tree

        sealed class Parser
        {
            readonly string s;
            public int Pos;

            public Parser(string text) { s = text; }

            public JsonException Error(string what)
            {
                return new JsonException("invalid JSON at offset " + Pos + ": " + what);
            }

            public void SkipSpace()
            {
                while (Pos < s.Length && (s[Pos] == ' ' || s[Pos] == '\t' || s[Pos] == '\n' || s[Pos] == '\r')) Pos++;
            }

            public object Value(int depth)
            {
                if (depth > MaxDepth) throw Error("nested too deeply");
                if (Pos >= s.Length) throw Error("unexpected end");
                char c = s[Pos];
                switch (c)
                {
                    case '{': return Object(depth);
                    case '[': return Array(depth);
                    case '"': return String();
                    case 't': Literal("true"); return true;
                    case 'f': Literal("false"); return false;
                    case 'n': Literal("null"); return null;
                    default:
                        if (c == '-' || (c >= '0' && c <= '9')) return Number();
                        throw Error("unexpected character '" + c + "'");
                }
            }

            void Literal(string word)
            {
                if (string.CompareOrdinal(s, Pos, word, 0, word.Length) != 0) throw Error("expected " + word);
                Pos += word.Length;
            }

            Dictionary<string, object> Object(int depth)
            {
                var obj = new Dictionary<string, object>();
                Pos++;
                SkipSpace();
                if (Pos < s.Length && s[Pos] == '}') { Pos++; return obj; }
                while (true)
                {
                    SkipSpace();
                    if (Pos >= s.Length || s[Pos] != '"') throw Error("expected a member name");
                    var key = String();
                    SkipSpace();
                    if (Pos >= s.Length || s[Pos] != ':') throw Error("expected ':'");
                    Pos++;
                    SkipSpace();
                    obj[key] = Value(depth + 1);
                    SkipSpace();
                    if (Pos >= s.Length) throw Error("unexpected end");
                    if (s[Pos] == ',') { Pos++; continue; }
                    if (s[Pos] == '}') { Pos++; return obj; }
                    throw Error("expected ',' or '}'");
                }
            }

            List<object> Array(int depth)
            {
                var list = new List<object>();
                Pos++;
                SkipSpace();
                if (Pos < s.Length && s[Pos] == ']') { Pos++; return list; }
                while (true)
                {
                    SkipSpace();
                    list.Add(Value(depth + 1));
                    SkipSpace();
                    if (Pos >= s.Length) throw Error("unexpected end");
                    if (s[Pos] == ',') { Pos++; continue; }
                    if (s[Pos] == ']') { Pos++; return list; }
                    throw Error("expected ',' or ']'");
                }
            }

            string String()
            {
                Pos++;  // opening quote
                StringBuilder sb = null;
                int start = Pos;
                while (true)
                {
                    if (Pos >= s.Length) throw Error("unterminated string");
                    char c = s[Pos];
                    if (c == '"')
                    {
                        string result = sb == null ? s.Substring(start, Pos - start) : sb.Append(s, start, Pos - start).ToString();
                        Pos++;
                        return result;
                    }
                    if (c < 0x20) throw Error("control character in string");
                    if (c != '\\') { Pos++; continue; }
                    if (sb == null) sb = new StringBuilder();
                    sb.Append(s, start, Pos - start);
                    Pos++;
                    if (Pos >= s.Length) throw Error("unterminated escape");
                    char e = s[Pos++];
                    switch (e)
                    {
                        case '"': sb.Append('"'); break;
                        case '\\': sb.Append('\\'); break;
                        case '/': sb.Append('/'); break;
                        case 'b': sb.Append('\b'); break;
                        case 'f': sb.Append('\f'); break;
                        case 'n': sb.Append('\n'); break;
                        case 'r': sb.Append('\r'); break;
                        case 't': sb.Append('\t'); break;
                        case 'u':
                            if (Pos + 4 > s.Length) throw Error("short \\u escape");
                            int code;
                            if (!int.TryParse(s.Substring(Pos, 4), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out code))
                                throw Error("bad \\u escape");
                            sb.Append((char)code);
                            Pos += 4;
                            break;
                        default: throw Error("bad escape \\" + e);
                    }
                    start = Pos;
                }
            }

            JsonNumber Number()
            {
                int start = Pos;
                if (s[Pos] == '-') Pos++;
                int digits = Pos;
                while (Pos < s.Length && s[Pos] >= '0' && s[Pos] <= '9') Pos++;
                if (Pos == digits) throw Error("expected a digit");
                if (Pos < s.Length && s[Pos] == '.')
                {
                    Pos++;
                    int frac = Pos;
                    while (Pos < s.Length && s[Pos] >= '0' && s[Pos] <= '9') Pos++;
                    if (Pos == frac) throw Error("expected a digit after '.'");
                }
                if (Pos < s.Length && (s[Pos] == 'e' || s[Pos] == 'E'))
                {
                    Pos++;
                    if (Pos < s.Length && (s[Pos] == '+' || s[Pos] == '-')) Pos++;
                    int exp = Pos;
                    while (Pos < s.Length && s[Pos] >= '0' && s[Pos] <= '9') Pos++;
                    if (Pos == exp) throw Error("expected an exponent");
                }
                return new JsonNumber(s.Substring(start, Pos - start));
            }
        }
    }

    /// <summary>Writes compact JSON; int64 as strings and non-finite doubles as "NaN"/"Infinity", as proto3 JSON requires.</summary>
    public sealed class JsonWriter
    {
        readonly StringBuilder sb = new StringBuilder();
        bool needComma;

        void Sep()
        {
            if (needComma) sb.Append(',');
            needComma = true;
        }

        public JsonWriter BeginObject() { Sep(); sb.Append('{'); needComma = false; return this; }
        public JsonWriter EndObject() { sb.Append('}'); needComma = true; return this; }
        public JsonWriter BeginArray() { Sep(); sb.Append('['); needComma = false; return this; }
        public JsonWriter EndArray() { sb.Append(']'); needComma = true; return this; }

        public JsonWriter Name(string name)
        {
            Sep();
            Quote(name);
            sb.Append(':');
            needComma = false;
            return this;
        }

        public JsonWriter String(string value)
        {
            Sep();
            if (value == null) sb.Append("null"); else Quote(value);
            return this;
        }

        public JsonWriter Bool(bool value) { Sep(); sb.Append(value ? "true" : "false"); return this; }
        public JsonWriter Null() { Sep(); sb.Append("null"); return this; }
        public JsonWriter Int32(int value) { Sep(); sb.Append(value.ToString(CultureInfo.InvariantCulture)); return this; }
        public JsonWriter UInt32(uint value) { Sep(); sb.Append(value.ToString(CultureInfo.InvariantCulture)); return this; }
        public JsonWriter Int64(long value) { Sep(); sb.Append('"').Append(value.ToString(CultureInfo.InvariantCulture)).Append('"'); return this; }
        public JsonWriter UInt64(ulong value) { Sep(); sb.Append('"').Append(value.ToString(CultureInfo.InvariantCulture)).Append('"'); return this; }
        public JsonWriter Bytes(byte[] value) { return String(Convert.ToBase64String(value)); }

        public JsonWriter Double(double value)
        {
            Sep();
            if (double.IsNaN(value)) sb.Append("\"NaN\"");
            else if (double.IsPositiveInfinity(value)) sb.Append("\"Infinity\"");
            else if (double.IsNegativeInfinity(value)) sb.Append("\"-Infinity\"");
            else
            {
                // "R" is the shortest form but does not always round-trip on .NET Framework / Mono; G17 always does
                var text = value.ToString("R", CultureInfo.InvariantCulture);
                double back;
                if (!Json.TryParseDouble(text, out back) || back != value)
                    text = value.ToString("G17", CultureInfo.InvariantCulture);
                sb.Append(text);
            }
            return this;
        }

        void Quote(string s)
        {
            sb.Append('"');
            foreach (char c in s)
            {
                switch (c)
                {
                    case '"': sb.Append("\\\""); break;
                    case '\\': sb.Append("\\\\"); break;
                    case '\n': sb.Append("\\n"); break;
                    case '\r': sb.Append("\\r"); break;
                    case '\t': sb.Append("\\t"); break;
                    case '\b': sb.Append("\\b"); break;
                    case '\f': sb.Append("\\f"); break;
                    default:
                        if (c < 0x20 || c == '\u2028' || c == '\u2029') sb.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
                        else sb.Append(c);
                        break;
                }
            }
            sb.Append('"');
        }

        public override string ToString() { return sb.ToString(); }
    }
}
