"""Generate the C# client's message classes (plain classes + proto3 JSON code) from protos/.

Writes clients/unity/com.psyserve.client/Runtime/Messages.g.cs, the one home of the C# sources
(clients/csharp builds from that folder). `make protos` runs it; tests/test_csharp_client.py fails
when the committed file is stale. It reads the .proto files through protoc (grpc_tools) into a
descriptor set and owns nothing else: the JSON reader/writer the generated code calls is the
hand-written Runtime/Json.cs. The output needs no protobuf runtime (no NuGet), uses no reflection
(IL2CPP-safe) and stays within C# 7.2 so Debian's mcs compiles it. Never edit the output by hand.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
OUT = ROOT / "clients" / "unity" / "com.psyserve.client" / "Runtime" / "Messages.g.cs"
NAMESPACE = "Psyserve.Client"

F = descriptor_pb2.FieldDescriptorProto
# proto scalar type -> (C# type, JsonWriter method, Json reader method, default test)
SCALARS: dict[int, tuple[str, str, str, str]] = {
    F.TYPE_DOUBLE: ("double", "Double", "ToDouble", "!= 0d"),
    F.TYPE_FLOAT: ("float", "Double", "ToFloat", "!= 0f"),
    F.TYPE_INT64: ("long", "Int64", "ToInt64", "!= 0L"),
    F.TYPE_SINT64: ("long", "Int64", "ToInt64", "!= 0L"),
    F.TYPE_SFIXED64: ("long", "Int64", "ToInt64", "!= 0L"),
    F.TYPE_UINT64: ("ulong", "UInt64", "ToUInt64", "!= 0UL"),
    F.TYPE_FIXED64: ("ulong", "UInt64", "ToUInt64", "!= 0UL"),
    F.TYPE_INT32: ("int", "Int32", "ToInt32", "!= 0"),
    F.TYPE_SINT32: ("int", "Int32", "ToInt32", "!= 0"),
    F.TYPE_SFIXED32: ("int", "Int32", "ToInt32", "!= 0"),
    F.TYPE_UINT32: ("uint", "UInt32", "ToUInt32", "!= 0U"),
    F.TYPE_FIXED32: ("uint", "UInt32", "ToUInt32", "!= 0U"),
    F.TYPE_BOOL: ("bool", "Bool", "ToBool", ""),
    F.TYPE_STRING: ("string", "String", "ToStr", ""),
    F.TYPE_BYTES: ("byte[]", "Bytes", "ToBytes", ""),
}


def pascal(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


def json_name(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        rc = protoc.main(["protoc", f"-I{PROTO_ROOT}", "--include_source_info", f"--descriptor_set_out={out}", *protos])
        if rc != 0:
            raise SystemExit(f"protoc failed ({rc})")
        fds = descriptor_pb2.FileDescriptorSet()
        fds.ParseFromString(out.read_bytes())
    return fds


class Gen:
    def __init__(self, fds: descriptor_pb2.FileDescriptorSet) -> None:
        self.files = [f for f in fds.file if f.package == "psyserve.v1"]
        self.messages: dict[str, descriptor_pb2.DescriptorProto] = {}
        self.enums: dict[str, descriptor_pb2.EnumDescriptorProto] = {}
        self.comments: dict[tuple[str, tuple[int, ...]], str] = {}
        self.lines: list[str] = []
        for f in self.files:
            for loc in f.source_code_info.location:
                if loc.leading_comments.strip():
                    self.comments[(f.name, tuple(loc.path))] = loc.leading_comments.strip()
            for m in f.message_type:
                self.messages[f".{f.package}.{m.name}"] = m
                for nested in m.nested_type:  # map entries
                    self.messages[f".{f.package}.{m.name}.{nested.name}"] = nested
            for e in f.enum_type:
                self.enums[f".{f.package}.{e.name}"] = e

    def out(self, line: str = "") -> None:
        self.lines.append(line)

    def doc(self, file: str, path: tuple[int, ...], indent: str) -> None:
        text = self.comments.get((file, path))
        if text:
            self.out(f"{indent}/// <summary>")
            for line in text.splitlines():
                line = line.strip().replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
                self.out(f"{indent}/// {line}")
            self.out(f"{indent}/// </summary>")

    # ------------------------------------------------------------------ enums

    def enum_member(self, enum: descriptor_pb2.EnumDescriptorProto, value_name: str) -> str:
        prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", enum.name).upper() + "_"
        stripped = value_name[len(prefix):] if value_name.startswith(prefix) else value_name
        return pascal(stripped.lower())

    def gen_enum(self, file: str, index: int, enum: descriptor_pb2.EnumDescriptorProto) -> None:
        self.doc(file, (5, index), "    ")
        self.out(f"    public enum {enum.name}")
        self.out("    {")
        for i, v in enumerate(enum.value):
            self.doc(file, (5, index, 2, i), "        ")
            self.out(f"        {self.enum_member(enum, v.name)} = {v.number},")
        self.out("    }")
        self.out()
        self.out(f"    internal static class {enum.name}Json")
        self.out("    {")
        self.out(f"        internal static string Name({enum.name} value)")
        self.out("        {")
        self.out("            switch (value)")
        self.out("            {")
        for v in enum.value:
            self.out(f'                case {enum.name}.{self.enum_member(enum, v.name)}: return "{v.name}";')
        self.out("                default: return null;")
        self.out("            }")
        self.out("        }")
        self.out()
        self.out(f"        internal static void Write(JsonWriter w, {enum.name} value)")
        self.out("        {")
        self.out("            var name = Name(value);")
        self.out("            if (name != null) w.String(name); else w.Int32((int)value);")
        self.out("        }")
        self.out()
        self.out(f"        internal static {enum.name} Read(object node, string field)")
        self.out("        {")
        self.out("            var text = node as string;")
        self.out(f"            if (text == null) return ({enum.name})Json.ToInt32(node, field);")
        self.out("            switch (text)")
        self.out("            {")
        for v in enum.value:
            self.out(f'                case "{v.name}": return {enum.name}.{self.enum_member(enum, v.name)};')
        self.out(f"                default: return ({enum.name})0;  // a value newer than this client")
        self.out("            }")
        self.out("        }")
        self.out("    }")
        self.out()

    # ------------------------------------------------------------------ messages

    def is_map(self, field: descriptor_pb2.FieldDescriptorProto) -> bool:
        if field.type != F.TYPE_MESSAGE or field.label != F.LABEL_REPEATED:
            return False
        return self.messages[field.type_name].options.map_entry

    def value_type(self, field: descriptor_pb2.FieldDescriptorProto) -> str:
        if field.type == F.TYPE_MESSAGE:
            return field.type_name.rsplit(".", 1)[1]
        if field.type == F.TYPE_ENUM:
            return field.type_name.rsplit(".", 1)[1]
        return SCALARS[field.type][0]

    def write_value(self, field: descriptor_pb2.FieldDescriptorProto, expr: str) -> str:
        if field.type == F.TYPE_MESSAGE:
            return f"{expr}.WriteJson(w);"
        if field.type == F.TYPE_ENUM:
            return f"{field.type_name.rsplit('.', 1)[1]}Json.Write(w, {expr});"
        return f"w.{SCALARS[field.type][1]}({expr});"

    def read_value(self, field: descriptor_pb2.FieldDescriptorProto, expr: str, jname: str) -> str:
        if field.type == F.TYPE_MESSAGE:
            return f"{field.type_name.rsplit('.', 1)[1]}.FromJson({expr})"
        if field.type == F.TYPE_ENUM:
            return f'{field.type_name.rsplit(".", 1)[1]}Json.Read({expr}, "{jname}")'
        return f'Json.{SCALARS[field.type][2]}({expr}, "{jname}")'

    def gen_message(self, file: str, index: int, msg: descriptor_pb2.DescriptorProto) -> None:
        name = msg.name
        self.doc(file, (4, index), "    ")
        self.out(f"    public sealed partial class {name} : IMessage")
        self.out("    {")
        # a proto3 `optional` field sits in a synthetic one-member oneof: it is a nullable value, not a oneof
        real_oneofs: dict[int, list[descriptor_pb2.FieldDescriptorProto]] = {}
        for field in msg.field:
            if field.HasField("oneof_index") and not field.proto3_optional:
                real_oneofs.setdefault(field.oneof_index, []).append(field)
        for i, field in enumerate(msg.field):
            prop = pascal(field.name)
            self.doc(file, (4, index, 2, i), "        ")
            vt = self.value_type(field)
            if self.is_map(field):
                entry = self.messages[field.type_name]
                key, value = entry.field[0], entry.field[1]
                if key.type != F.TYPE_STRING:
                    raise SystemExit(f"{name}.{field.name}: only string-keyed maps are supported")
                self.out(f"        public Dictionary<string, {self.value_type(value)}> {prop} = new Dictionary<string, {self.value_type(value)}>();")
            elif field.label == F.LABEL_REPEATED:
                self.out(f"        public List<{vt}> {prop} = new List<{vt}>();")
            elif field.type == F.TYPE_MESSAGE:
                self.out(f"        public {vt} {prop};")
            elif field.HasField("oneof_index") and field.type not in (F.TYPE_STRING, F.TYPE_BYTES):
                self.out(f"        public {vt}? {prop};")  # presence: oneof member or proto3 optional
            elif field.type == F.TYPE_STRING and not field.HasField("oneof_index"):
                self.out(f'        public string {prop} = "";')
            elif field.type == F.TYPE_BYTES and not field.HasField("oneof_index"):
                self.out(f"        public byte[] {prop} = new byte[0];")
            else:
                self.out(f"        public {vt} {prop};")
        if msg.field:
            self.out()
        # writer
        self.out("        public void WriteJson(JsonWriter w)")
        self.out("        {")
        for index_, members in sorted(real_oneofs.items()):
            tests = " + ".join(f"({pascal(f.name)} != null ? 1 : 0)" for f in members)
            names = ", ".join(f.name for f in members)
            oneof = msg.oneof_decl[index_].name
            self.out(f"            if ({tests} > 1)")
            self.out(f'                throw new System.ArgumentException("{name}: set only one of {names} (oneof {oneof})");')
        self.out("            w.BeginObject();")
        for field in msg.field:
            prop, jname = pascal(field.name), json_name(field.name)
            if self.is_map(field):
                value = self.messages[field.type_name].field[1]
                self.out(f"            if ({prop} != null && {prop}.Count > 0)")
                self.out("            {")
                self.out(f'                w.Name("{jname}");')
                self.out("                w.BeginObject();")
                self.out(f"                foreach (var kv in {prop})")
                self.out("                {")
                self.out("                    w.Name(kv.Key);")
                if value.type == F.TYPE_MESSAGE:
                    self.out("                    if (kv.Value == null) w.BeginObject().EndObject(); else kv.Value.WriteJson(w);")
                else:
                    self.out(f"                    {self.write_value(value, 'kv.Value')}")
                self.out("                }")
                self.out("                w.EndObject();")
                self.out("            }")
            elif field.label == F.LABEL_REPEATED:
                self.out(f"            if ({prop} != null && {prop}.Count > 0)")
                self.out("            {")
                self.out(f'                w.Name("{jname}");')
                self.out("                w.BeginArray();")
                self.out(f"                foreach (var item in {prop}) {self.write_value(field, 'item')}")
                self.out("                w.EndArray();")
                self.out("            }")
            elif field.type == F.TYPE_MESSAGE or (field.type in (F.TYPE_STRING, F.TYPE_BYTES) and field.HasField("oneof_index")):
                self.out(f'            if ({prop} != null) {{ w.Name("{jname}"); {self.write_value(field, prop)} }}')
            elif field.HasField("oneof_index"):
                self.out(f'            if ({prop}.HasValue) {{ w.Name("{jname}"); {self.write_value(field, prop + ".Value")} }}')
            elif field.type == F.TYPE_ENUM:
                self.out(f'            if ((int){prop} != 0) {{ w.Name("{jname}"); {self.write_value(field, prop)} }}')
            elif field.type == F.TYPE_BOOL:
                self.out(f'            if ({prop}) {{ w.Name("{jname}"); w.Bool(true); }}')
            elif field.type == F.TYPE_STRING:
                self.out(f'            if (!string.IsNullOrEmpty({prop})) {{ w.Name("{jname}"); w.String({prop}); }}')
            elif field.type == F.TYPE_BYTES:
                self.out(f'            if ({prop} != null && {prop}.Length > 0) {{ w.Name("{jname}"); w.Bytes({prop}); }}')
            else:
                self.out(f'            if ({prop} {SCALARS[field.type][3]}) {{ w.Name("{jname}"); {self.write_value(field, prop)} }}')
        self.out("            w.EndObject();")
        self.out("        }")
        self.out()
        # reader
        self.out("        /// <summary>Reads the proto3 JSON form (camelCase or proto field names; int64 as string or number; unknown fields ignored).</summary>")
        self.out(f"        public static {name} FromJson(object node)")
        self.out("        {")
        self.out(f"            var m = new {name}();")
        if not msg.field:
            self.out(f'            Json.AsObject(node, "{name}");  // no fields: only check the shape')
            self.out("            return m;")
            self.out("        }")
            self.out()
            self.out("        public override string ToString() { return Json.Serialize(this); }")
            self.out("    }")
            self.out()
            return
        self.out(f'            var obj = Json.AsObject(node, "{name}");')
        self.out("            if (obj == null) return m;")
        self.out("            foreach (var kv in obj)")
        self.out("            {")
        self.out("                if (kv.Value == null) continue;")
        self.out("                switch (kv.Key)")
        self.out("                {")
        for field in msg.field:
            prop, jname = pascal(field.name), json_name(field.name)
            labels = f'case "{jname}":' + (f' case "{field.name}":' if field.name != jname else "")
            self.out(f"                    {labels}")
            if self.is_map(field):
                value = self.messages[field.type_name].field[1]
                self.out(f'                        foreach (var e in Json.AsObject(kv.Value, "{jname}"))')
                self.out(f"                            m.{prop}[e.Key] = {self.read_value(value, 'e.Value', jname)};")
            elif field.label == F.LABEL_REPEATED:
                self.out(f'                        foreach (var item in Json.AsArray(kv.Value, "{jname}"))')
                self.out(f"                            m.{prop}.Add({self.read_value(field, 'item', jname)});")
            else:
                self.out(f"                        m.{prop} = {self.read_value(field, 'kv.Value', jname)};")
            self.out("                        break;")
        self.out("                }")
        self.out("            }")
        self.out("            return m;")
        self.out("        }")
        self.out()
        self.out("        public override string ToString() { return Json.Serialize(this); }")
        self.out("    }")
        self.out()

    def generate(self) -> str:
        self.out("// <auto-generated>")
        self.out("// Generated by scripts/gen_csharp.py from protos/psyserve/v1/ (make protos). Do not edit.")
        self.out("// Plain classes with the proto3 JSON mapping; no protobuf runtime needed.")
        self.out("// </auto-generated>")
        self.out("using System.Collections.Generic;")
        self.out()
        self.out(f"namespace {NAMESPACE}")
        self.out("{")
        for f in self.files:
            for i, e in enumerate(f.enum_type):
                self.gen_enum(f.name, i, e)
            for i, m in enumerate(f.message_type):
                self.gen_message(f.name, i, m)
        self.out("    /// <summary>Every message type by its full proto name.</summary>")
        self.out("    public static class MessageRegistry")
        self.out("    {")
        self.out('        /// <summary>Parses proto3 JSON as the named message ("psyserve.v1.AskRequest"); null for an unknown name.</summary>')
        self.out("        public static IMessage FromJson(string fullName, object node)")
        self.out("        {")
        self.out("            switch (fullName)")
        self.out("            {")
        for f in self.files:
            for m in f.message_type:
                self.out(f'                case "{f.package}.{m.name}": return {m.name}.FromJson(node);')
        self.out("                default: return null;")
        self.out("            }")
        self.out("        }")
        self.out("    }")
        self.out()
        self.out("    /// <summary>The service's unary methods, as the Connect URL path names them.</summary>")
        self.out("    public static class ExperimentServiceMethods")
        self.out("    {")
        for f in self.files:
            for s in f.service:
                self.out(f'        public const string ServiceName = "{f.package}.{s.name}";')
                for m in s.method:
                    stream = " (server stream: not in the C# client)" if m.server_streaming else ""
                    self.out(f'        public const string {m.name} = "{m.name}";  // {m.input_type.rsplit(".", 1)[1]} -> {m.output_type.rsplit(".", 1)[1]}{stream}')
        self.out("    }")
        self.out("}")
        return "\n".join(self.lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=OUT, help="output file (default: the Unity package's Runtime/)")
    out = parser.parse_args(argv).out
    text = Gen(descriptor_set()).generate()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
