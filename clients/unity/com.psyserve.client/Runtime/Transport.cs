// Transports of the C# client: ITransport (one unary HTTP POST) and the HttpClient implementation.
// The UnityWebRequest one lives in UnityWebRequestTransport.cs. A transport moves bytes and maps
// network failures to exceptions; it never looks at message contents or Connect error bodies.
using System;
using System.Collections.Generic;
using System.Net.Http;
using System.Net.Http.Headers;
using System.Threading;
using System.Threading.Tasks;

namespace Psyserve.Client
{
    /// <summary>One unary request: POST <see cref="Path"/> (relative to the transport's base URL) with a body.</summary>
    public sealed class TransportRequest
    {
        public string Path;
        public byte[] Body;
        public string ContentType = "application/json";
        public Dictionary<string, string> Headers = new Dictionary<string, string>();
        /// <summary>Whole-call limit; TimeSpan.Zero or negative means none.</summary>
        public TimeSpan Timeout;
    }

    /// <summary>The HTTP reply, whatever its status: the client decodes Connect errors from it.</summary>
    public sealed class TransportResponse
    {
        public int StatusCode;
        public byte[] Body;
        public string ContentType;
    }

    /// <summary>
    /// Sends one unary request. Implementations throw <see cref="UnavailableException"/> when the server
    /// cannot be reached, <see cref="DeadlineExceededException"/> when the timeout passes and
    /// <see cref="CanceledException"/> when the token is canceled; any HTTP reply is returned, not thrown.
    /// </summary>
    public interface ITransport : IDisposable
    {
        Task<TransportResponse> SendAsync(TransportRequest request, CancellationToken cancellationToken);
    }

    /// <summary>ITransport over System.Net.Http.HttpClient (.NET, Mono, Unity standalone/Android/iOS; not WebGL).</summary>
    public sealed class HttpClientTransport : ITransport
    {
        readonly HttpClient http;
        readonly bool ownsClient;
        readonly Uri baseUri;

        /// <param name="baseUrl">e.g. "http://127.0.0.1:8080" or "https://lab-pc.local:8443/prefix"</param>
        /// <param name="handler">optional handler (proxy, certificates); the transport disposes it</param>
        public HttpClientTransport(string baseUrl, HttpMessageHandler handler = null)
            : this(baseUrl, handler == null ? new HttpClient() : new HttpClient(handler, true), true) { }

        /// <summary>Uses a caller-owned HttpClient (left open on Dispose when ownsClient is false).</summary>
        public HttpClientTransport(string baseUrl, HttpClient client, bool ownsClient)
        {
            if (string.IsNullOrEmpty(baseUrl)) throw new ArgumentException("baseUrl is required", "baseUrl");
            baseUri = new Uri(baseUrl.EndsWith("/", StringComparison.Ordinal) ? baseUrl : baseUrl + "/", UriKind.Absolute);
            http = client;
            this.ownsClient = ownsClient;
            http.Timeout = System.Threading.Timeout.InfiniteTimeSpan;  // per request, below
        }

        public async Task<TransportResponse> SendAsync(TransportRequest request, CancellationToken cancellationToken)
        {
            using (var timeout = new CancellationTokenSource())
            using (var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, timeout.Token))
            {
                if (request.Timeout > TimeSpan.Zero) timeout.CancelAfter(request.Timeout);
                var message = new HttpRequestMessage(HttpMethod.Post, new Uri(baseUri, request.Path.TrimStart('/')));
                message.Content = new ByteArrayContent(request.Body ?? new byte[0]);
                message.Content.Headers.ContentType = new MediaTypeHeaderValue(request.ContentType);
                foreach (var h in request.Headers)
                    message.Headers.TryAddWithoutValidation(h.Key, h.Value);
                try
                {
                    using (message)
                    using (var reply = await http.SendAsync(message, HttpCompletionOption.ResponseContentRead, linked.Token).ConfigureAwait(false))
                    {
                        var body = await reply.Content.ReadAsByteArrayAsync().ConfigureAwait(false);
                        var type = reply.Content.Headers.ContentType;
                        return new TransportResponse { StatusCode = (int)reply.StatusCode, Body = body, ContentType = type == null ? "" : type.MediaType };
                    }
                }
                catch (OperationCanceledException e)
                {
                    if (cancellationToken.IsCancellationRequested) throw new CanceledException("the call was canceled", null, e);
                    throw new DeadlineExceededException("no reply within " + request.Timeout.TotalSeconds + " s (" + request.Path + ")", null, e);
                }
                catch (HttpRequestException e)
                {
                    throw new UnavailableException("cannot reach " + baseUri + ": " + Innermost(e).Message, null, e);
                }
                catch (System.Net.WebException e)
                {
                    throw new UnavailableException("cannot reach " + baseUri + ": " + Innermost(e).Message, null, e);
                }
                catch (System.IO.IOException e)
                {
                    throw new UnavailableException("connection to " + baseUri + " failed: " + Innermost(e).Message, null, e);
                }
            }
        }

        static Exception Innermost(Exception e)
        {
            while (e.InnerException != null) e = e.InnerException;
            return e;
        }

        public void Dispose()
        {
            if (ownsClient) http.Dispose();
        }
    }
}
