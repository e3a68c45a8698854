// A stand-in for the few UnityEngine types the Unity transport and the sample use, with Unity's
// signatures and no behaviour: compiling against it proves those files compile (names, types,
// C# version), nothing more. Compiled with -define:UNITY_5_3_OR_NEWER -define:UNITY_2020_2_OR_NEWER.
using System;
using System.Collections;

namespace UnityEngine
{
    public class Object { }
    public class Component : Object { public Transform transform { get { return null; } } }
    public class Behaviour : Component { public bool enabled { get; set; } }
    public class MonoBehaviour : Behaviour { }
    public class Transform : Component { public Vector3 localScale { get; set; } }
    public class Renderer : Component { public bool enabled { get; set; } public Material material { get; set; } }
    public class Material : Object { public Color color { get; set; } }
    public class TextAsset : Object { public string text { get { return ""; } } }
    public struct Color { public Color(float r, float g, float b, float a) { } }
    public struct Vector3 { public Vector3(float x, float y, float z) { } }
    public enum KeyCode { N = 110, Y = 121 }
    public static class Input { public static bool GetKeyDown(KeyCode key) { return false; } }
    public static class Time { public static float realtimeSinceStartup { get { return 0; } } }
    public static class Debug
    {
        public static void Log(object message) { }
        public static void LogError(object message) { }
    }
    public abstract class CustomYieldInstruction : IEnumerator
    {
        public abstract bool keepWaiting { get; }
        public object Current { get { return null; } }
        public bool MoveNext() { return keepWaiting; }
        public void Reset() { }
    }
    public sealed class WaitUntil : CustomYieldInstruction
    {
        public WaitUntil(Func<bool> predicate) { }
        public override bool keepWaiting { get { return false; } }
    }
    [AttributeUsage(AttributeTargets.Field)]
    public sealed class TooltipAttribute : Attribute { public TooltipAttribute(string tooltip) { } }
    public class AsyncOperation { public event Action<AsyncOperation> completed { add { } remove { } } }
}

namespace UnityEngine.Networking
{
    public class UploadHandler : IDisposable { public void Dispose() { } }
    public sealed class UploadHandlerRaw : UploadHandler { public UploadHandlerRaw(byte[] data) { } }
    public class DownloadHandler : IDisposable { public byte[] data { get { return null; } } public void Dispose() { } }
    public sealed class DownloadHandlerBuffer : DownloadHandler { }
    public sealed class UnityWebRequestAsyncOperation : UnityEngine.AsyncOperation { }
    public class UnityWebRequest : IDisposable
    {
        public enum Result { InProgress, Success, ConnectionError, ProtocolError, DataProcessingError }
        public UnityWebRequest(string url, string method) { }
        public UploadHandler uploadHandler { get; set; }
        public DownloadHandler downloadHandler { get; set; }
        public int timeout { get; set; }
        public long responseCode { get { return 0; } }
        public Result result { get { return Result.InProgress; } }
        public bool isNetworkError { get { return false; } }
        public string error { get { return null; } }
        public string url { get { return null; } }
        public void SetRequestHeader(string name, string value) { }
        public string GetResponseHeader(string name) { return null; }
        public UnityWebRequestAsyncOperation SendWebRequest() { return null; }
        public void Abort() { }
        public void Dispose() { }
    }
}
