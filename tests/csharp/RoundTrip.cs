// Test tool (tests/test_csharp_client.py): reads "full.message.Name<TAB>json" lines from stdin, parses each
// with the generated C# class and writes it back as proto3 JSON, one line per input line; a parse error
// is written as "ERROR <TAB> message" (the test expects those only for the inputs it made invalid).
// Also decodes google.rpc.BadRequest protobuf bytes ("!badrequest<TAB>base64") with the wire-format reader.
using System;
using System.Text;
using Psyserve.Client;

static class RoundTrip
{
    static int Main()
    {
        Console.OutputEncoding = new UTF8Encoding(false);
        var stdin = new System.IO.StreamReader(Console.OpenStandardInput(), new UTF8Encoding(false));
        string line;
        while ((line = stdin.ReadLine()) != null)
        {
            var tab = line.IndexOf('\t');
            var name = line.Substring(0, tab);
            var text = line.Substring(tab + 1);
            try
            {
                if (name == "!badrequest")
                {
                    var w = new JsonWriter().BeginArray();
                    foreach (var v in WireFormat.ReadBadRequest(Json.Base64Decode(text)))
                        w.BeginArray().String(v.Field).String(v.Description).EndArray();
                    Console.WriteLine(w.EndArray().ToString());
                    continue;
                }
                if (name == "!error")
                {
                    var e = PsyserveException.FromConnect(400, text);
                    Console.WriteLine(new JsonWriter().BeginArray().String(e.GetType().Name).String(e.Code).String(e.Field).String(e.Message).EndArray());
                    continue;
                }
                var message = MessageRegistry.FromJson(name, Json.Parse(text));
                if (message == null) throw new ArgumentException("unknown message " + name);
                Console.WriteLine(Json.Serialize(message));
            }
            catch (Exception e) when (e is FormatException || e is ArgumentException)
            {
                Console.WriteLine("ERROR\t" + e.GetType().Name + ": " + e.Message.Replace('\n', ' '));
            }
        }
        return 0;
    }
}
