// ITransport over UnityWebRequest: every Unity platform, WebGL included (there the browser's fetch
// carries it, so the server must allow the page's origin: psyserve serve --cors-origin ...).
// Compiled only inside Unity (UNITY_5_3_OR_NEWER); plain .NET builds use HttpClientTransport.
// Moves bytes only, like every transport.
#if UNITY_5_3_OR_NEWER
using System;
using System.Threading;
using System.Threading.Tasks;
using UnityEngine.Networking;

namespace Psyserve.Client
{
    /// <summary>
    /// Sends each call with UnityWebRequest. Start calls on Unity's main thread (any MonoBehaviour, or a
    /// continuation of an await in one): UnityWebRequest refuses other threads. The returned Task completes
    /// on the main thread when the request finishes, so it never blocks a frame.
    /// </summary>
    public sealed class UnityWebRequestTransport : ITransport
    {
        readonly string baseUrl;

        /// <param name="baseUrl">e.g. "http://192.168.1.20:8080" (a lab PC) or "https://psyserve.example.org"</param>
        public UnityWebRequestTransport(string baseUrl)
        {
            if (string.IsNullOrEmpty(baseUrl)) throw new ArgumentException("baseUrl is required", "baseUrl");
            this.baseUrl = baseUrl.TrimEnd('/');
        }

        public Task<TransportResponse> SendAsync(TransportRequest request, CancellationToken cancellationToken)
        {
            var tcs = new TaskCompletionSource<TransportResponse>();
            if (cancellationToken.IsCancellationRequested)
            {
                tcs.SetException(new CanceledException("the call was canceled"));
                return tcs.Task;
            }
            var web = new UnityWebRequest(baseUrl + "/" + request.Path.TrimStart('/'), "POST");
            web.uploadHandler = new UploadHandlerRaw(request.Body ?? new byte[0]);
            web.downloadHandler = new DownloadHandlerBuffer();
            web.SetRequestHeader("Content-Type", request.ContentType);
            foreach (var h in request.Headers) web.SetRequestHeader(h.Key, h.Value);
            if (request.Timeout > TimeSpan.Zero) web.timeout = Math.Max(1, (int)Math.Ceiling(request.Timeout.TotalSeconds));
            var registration = cancellationToken.Register(() => web.Abort());
            var operation = web.SendWebRequest();
            operation.completed += _ =>
            {
                registration.Dispose();
                try
                {
                    tcs.TrySetResult(Finish(web, request, cancellationToken));
                }
                catch (Exception e)
                {
                    tcs.TrySetException(e);
                }
                finally
                {
                    web.Dispose();
                }
            };
            return tcs.Task;
        }

        static TransportResponse Finish(UnityWebRequest web, TransportRequest request, CancellationToken cancellationToken)
        {
            if (cancellationToken.IsCancellationRequested) throw new CanceledException("the call was canceled");
            // An HTTP error status still carries the Connect error body: only "no reply at all" is a transport failure.
            bool noReply = web.responseCode == 0;
#if UNITY_2020_2_OR_NEWER
            noReply = noReply || web.result == UnityWebRequest.Result.ConnectionError;
#else
            noReply = noReply || web.isNetworkError;
#endif
            if (noReply)
            {
                var error = web.error ?? "no reply";
                if (error.IndexOf("timeout", StringComparison.OrdinalIgnoreCase) >= 0 || error.IndexOf("timed out", StringComparison.OrdinalIgnoreCase) >= 0)
                    throw new DeadlineExceededException("no reply within " + request.Timeout.TotalSeconds + " s (" + request.Path + ")");
                throw new UnavailableException("cannot reach " + web.url + ": " + error);
            }
            var type = web.GetResponseHeader("Content-Type") ?? "";
            var semicolon = type.IndexOf(';');
            return new TransportResponse
            {
                StatusCode = (int)web.responseCode,
                Body = web.downloadHandler.data ?? new byte[0],
                ContentType = (semicolon >= 0 ? type.Substring(0, semicolon) : type).Trim(),
            };
        }

        public void Dispose() { }
    }
}
#endif
