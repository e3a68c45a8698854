// Errors of the C# client: one exception class per Connect/gRPC status code, each carrying the
// offending request field or config key when the server named one (google.rpc.BadRequest detail).
// Owns the decoding of Connect error bodies; knows nothing about transports or messages.
using System;
using System.Collections.Generic;
using System.Text;

namespace Psyserve.Client
{
    /// <summary>One violation from a google.rpc.BadRequest detail: the field (or "[section] key") and why.</summary>
    public sealed class FieldViolation
    {
        public readonly string Field;
        public readonly string Description;
        public FieldViolation(string field, string description) { Field = field; Description = description; }
        public override string ToString() { return Field + ": " + Description; }
    }

    /// <summary>
    /// An RPC failed. <see cref="Code"/> is the Connect code ("invalid_argument", ...), <see cref="Field"/>
    /// the request field or config key at fault (null when the server named none).
    /// Catch a subclass (InvalidArgumentException, NotFoundException, ...) for one status.
    /// </summary>
    public class PsyserveException : Exception
    {
        public readonly string Code;
        public readonly string Field;
        public readonly IList<FieldViolation> Violations;

        public PsyserveException(string code, string message, IList<FieldViolation> violations = null, Exception inner = null)
            : base(message, inner)
        {
            Code = code;
            Violations = violations ?? new List<FieldViolation>();
            Field = Violations.Count > 0 ? Violations[0].Field : null;
        }

        public override string ToString()
        {
            return GetType().Name + " (" + Code + (Field != null ? ", field " + Field : "") + "): " + Message;
        }

        /// <summary>The exception class for a Connect code (unknown codes give PsyserveException).</summary>
        public static PsyserveException Create(string code, string message, IList<FieldViolation> violations = null, Exception inner = null)
        {
            switch (code)
            {
                case "canceled": return new CanceledException(message, violations, inner);
                case "unknown": return new UnknownException(message, violations, inner);
                case "invalid_argument": return new InvalidArgumentException(message, violations, inner);
                case "deadline_exceeded": return new DeadlineExceededException(message, violations, inner);
                case "not_found": return new NotFoundException(message, violations, inner);
                case "already_exists": return new AlreadyExistsException(message, violations, inner);
                case "permission_denied": return new PermissionDeniedException(message, violations, inner);
                case "resource_exhausted": return new ResourceExhaustedException(message, violations, inner);
                case "failed_precondition": return new FailedPreconditionException(message, violations, inner);
                case "aborted": return new AbortedException(message, violations, inner);
                case "out_of_range": return new OutOfRangeException(message, violations, inner);
                case "unimplemented": return new UnimplementedException(message, violations, inner);
                case "internal": return new InternalException(message, violations, inner);
                case "unavailable": return new UnavailableException(message, violations, inner);
                case "data_loss": return new DataLossException(message, violations, inner);
                case "unauthenticated": return new UnauthenticatedException(message, violations, inner);
                default: return new PsyserveException(code, message, violations, inner);
            }
        }

        /// <summary>
        /// Decodes a Connect unary error: the JSON body {"code", "message", "details"} when there is one,
        /// else the code the Connect protocol assigns to the HTTP status. Field violations come from a
        /// google.rpc.BadRequest detail: its "debug" JSON when present, else its base64 protobuf "value".
        /// </summary>
        public static PsyserveException FromConnect(int httpStatus, string body)
        {
            string code = null, message = null;
            var violations = new List<FieldViolation>();
            Dictionary<string, object> obj = null;
            try { obj = string.IsNullOrEmpty(body) ? null : Json.Parse(body) as Dictionary<string, object>; }
            catch (JsonException) { obj = null; }
            if (obj != null)
            {
                object node;
                if (obj.TryGetValue("code", out node)) code = node as string;
                if (obj.TryGetValue("message", out node)) message = node as string;
                if (obj.TryGetValue("details", out node) && node is List<object>)
                {
                    foreach (var d in (List<object>)node)
                    {
                        var detail = d as Dictionary<string, object>;
                        if (detail == null) continue;
                        object type;
                        detail.TryGetValue("type", out type);
                        var typeName = type as string ?? "";
                        if (typeName != "google.rpc.BadRequest" && !typeName.EndsWith("/google.rpc.BadRequest", StringComparison.Ordinal)) continue;
                        violations.AddRange(BadRequestViolations(detail));
                    }
                }
            }
            if (string.IsNullOrEmpty(code)) code = CodeForHttpStatus(httpStatus);
            if (string.IsNullOrEmpty(message)) message = "HTTP " + httpStatus + (obj == null && !string.IsNullOrEmpty(body) ? ": " + Shorten(body) : "");
            return Create(code, message, violations);
        }

        static IEnumerable<FieldViolation> BadRequestViolations(Dictionary<string, object> detail)
        {
            var result = new List<FieldViolation>();
            object debug;
            if (detail.TryGetValue("debug", out debug) && debug is Dictionary<string, object>)
            {
                object list;
                var d = (Dictionary<string, object>)debug;
                if ((d.TryGetValue("fieldViolations", out list) || d.TryGetValue("field_violations", out list)) && list is List<object>)
                {
                    foreach (var item in (List<object>)list)
                    {
                        var v = item as Dictionary<string, object>;
                        if (v == null) continue;
                        object f, desc;
                        v.TryGetValue("field", out f);
                        v.TryGetValue("description", out desc);
                        result.Add(new FieldViolation(f as string ?? "", desc as string ?? ""));
                    }
                    return result;
                }
            }
            object value;
            if (detail.TryGetValue("value", out value) && value is string)
            {
                try { return WireFormat.ReadBadRequest(Json.Base64Decode((string)value)); }
                catch (FormatException) { }
            }
            return result;
        }

        /// <summary>The Connect protocol's code for an HTTP status when the body has none.</summary>
        public static string CodeForHttpStatus(int status)
        {
            switch (status)
            {
                case 400: return "internal";
                case 401: return "unauthenticated";
                case 403: return "permission_denied";
                case 404: return "unimplemented";
                case 408: return "deadline_exceeded";
                case 429: return "unavailable";
                case 502: return "unavailable";
                case 503: return "unavailable";
                case 504: return "unavailable";
                default: return "unknown";
            }
        }

        static string Shorten(string s) { return s.Length <= 200 ? s : s.Substring(0, 200) + "..."; }
    }

    public sealed class CanceledException : PsyserveException { public CanceledException(string m, IList<FieldViolation> v = null, Exception i = null) : base("canceled", m, v, i) { } }
    public sealed class UnknownException : PsyserveException { public UnknownException(string m, IList<FieldViolation> v = null, Exception i = null) : base("unknown", m, v, i) { } }
    public sealed class InvalidArgumentException : PsyserveException { public InvalidArgumentException(string m, IList<FieldViolation> v = null, Exception i = null) : base("invalid_argument", m, v, i) { } }
    public sealed class DeadlineExceededException : PsyserveException { public DeadlineExceededException(string m, IList<FieldViolation> v = null, Exception i = null) : base("deadline_exceeded", m, v, i) { } }
    public sealed class NotFoundException : PsyserveException { public NotFoundException(string m, IList<FieldViolation> v = null, Exception i = null) : base("not_found", m, v, i) { } }
    public sealed class AlreadyExistsException : PsyserveException { public AlreadyExistsException(string m, IList<FieldViolation> v = null, Exception i = null) : base("already_exists", m, v, i) { } }
    public sealed class PermissionDeniedException : PsyserveException { public PermissionDeniedException(string m, IList<FieldViolation> v = null, Exception i = null) : base("permission_denied", m, v, i) { } }
    public sealed class ResourceExhaustedException : PsyserveException { public ResourceExhaustedException(string m, IList<FieldViolation> v = null, Exception i = null) : base("resource_exhausted", m, v, i) { } }
    public sealed class FailedPreconditionException : PsyserveException { public FailedPreconditionException(string m, IList<FieldViolation> v = null, Exception i = null) : base("failed_precondition", m, v, i) { } }
    public sealed class AbortedException : PsyserveException { public AbortedException(string m, IList<FieldViolation> v = null, Exception i = null) : base("aborted", m, v, i) { } }
    public sealed class OutOfRangeException : PsyserveException { public OutOfRangeException(string m, IList<FieldViolation> v = null, Exception i = null) : base("out_of_range", m, v, i) { } }
    public sealed class UnimplementedException : PsyserveException { public UnimplementedException(string m, IList<FieldViolation> v = null, Exception i = null) : base("unimplemented", m, v, i) { } }
    public sealed class InternalException : PsyserveException { public InternalException(string m, IList<FieldViolation> v = null, Exception i = null) : base("internal", m, v, i) { } }
    public sealed class UnavailableException : PsyserveException { public UnavailableException(string m, IList<FieldViolation> v = null, Exception i = null) : base("unavailable", m, v, i) { } }
    public sealed class DataLossException : PsyserveException { public DataLossException(string m, IList<FieldViolation> v = null, Exception i = null) : base("data_loss", m, v, i) { } }
    public sealed class UnauthenticatedException : PsyserveException { public UnauthenticatedException(string m, IList<FieldViolation> v = null, Exception i = null) : base("unauthenticated", m, v, i) { } }

    /// <summary>Just enough of the protobuf wire format to read a google.rpc.BadRequest.</summary>
    public static class WireFormat
    {
        /// <summary>BadRequest { repeated FieldViolation field_violations = 1; } FieldViolation { string field = 1; string description = 2; }</summary>
        public static List<FieldViolation> ReadBadRequest(byte[] data)
        {
            var result = new List<FieldViolation>();
            int pos = 0;
            while (pos < data.Length)
            {
                ulong tag = Varint(data, ref pos);
                if (tag >> 3 == 1 && (tag & 7) == 2)
                {
                    int len = Length(data, ref pos);
                    result.Add(ReadViolation(data, pos, pos + len));
                    pos += len;
                }
                else Skip(data, ref pos, (int)(tag & 7));
            }
            return result;
        }

        static FieldViolation ReadViolation(byte[] data, int pos, int end)
        {
            string field = "", description = "";
            while (pos < end)
            {
                ulong tag = Varint(data, ref pos);
                if ((tag & 7) == 2 && (tag >> 3 == 1 || tag >> 3 == 2))
                {
                    int len = Length(data, ref pos);
                    var text = Encoding.UTF8.GetString(data, pos, len);
                    if (tag >> 3 == 1) field = text; else description = text;
                    pos += len;
                }
                else Skip(data, ref pos, (int)(tag & 7));
            }
            if (pos != end) throw new FormatException("BadRequest: truncated field violation");
            return new FieldViolation(field, description);
        }

        static ulong Varint(byte[] data, ref int pos)
        {
            ulong value = 0;
            for (int shift = 0; shift < 64; shift += 7)
            {
                if (pos >= data.Length) throw new FormatException("protobuf: truncated varint");
                byte b = data[pos++];
                value |= (ulong)(b & 0x7f) << shift;
                if (b < 0x80) return value;
            }
            throw new FormatException("protobuf: varint too long");
        }

        static int Length(byte[] data, ref int pos)
        {
            ulong len = Varint(data, ref pos);
            if (len > (ulong)(data.Length - pos)) throw new FormatException("protobuf: length past the end");
            return (int)len;
        }

        static void Skip(byte[] data, ref int pos, int wireType)
        {
            switch (wireType)
            {
                case 0: Varint(data, ref pos); break;
                case 1: pos += 8; break;
                case 2: pos += Length(data, ref pos); break;
                case 5: pos += 4; break;
                default: throw new FormatException("protobuf: unsupported wire type " + wireType);
            }
            if (pos > data.Length) throw new FormatException("protobuf: truncated field");
        }
    }
}
