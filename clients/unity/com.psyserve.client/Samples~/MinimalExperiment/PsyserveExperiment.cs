// Minimal psyserve experiment for Unity: ask -> show the stimulus -> wait for a key -> tell, as a
// coroutine that only polls finished Tasks once per frame, so no frame ever waits on the network.
// Set it up: a Quad (the stimulus) with this component, `config` = detection_config.txt, and a
// psyserve on the lab PC: `psyserve serve --http-port 8080 --host 0.0.0.0 --auth-token ...`.
using System.Collections;
using System.Collections.Generic;
using System.Globalization;
using System.Threading.Tasks;
using Psyserve.Client;
using UnityEngine;

public class PsyserveExperiment : MonoBehaviour
{
    [Tooltip("The lab PC's psyserve HTTP endpoint (psyserve serve --http-port 8080)")]
    public string serverUrl = "http://127.0.0.1:8080";
    [Tooltip("The server's --auth-token, if it has one")]
    public string token = "";
    [Tooltip("AEPsych-style INI experiment config (a .txt TextAsset); this sample expects parameters 'contrast' and 'size'")]
    public TextAsset config;
    public string participant = "P01";
    [Tooltip("Shows the stimulus: grey level = contrast, scale = size")]
    public Renderer stimulus;
    public int maxTrials = 60;

    PsyserveClient client;

    IEnumerator Start()
    {
        client = new PsyserveClient(new UnityWebRequestTransport(serverUrl), token, System.TimeSpan.FromSeconds(30));
        var configure = client.ConfigureAsync(config.text, participant + "-" + System.DateTime.UtcNow.ToString("yyyyMMddHHmmss", CultureInfo.InvariantCulture));
        yield return Wait(configure);
        if (Failed(configure)) yield break;
        Debug.Log("psyserve strategy " + configure.Result.StrategyId);

        for (int i = 0; i < maxTrials; i++)
        {
            var ask = client.AskAsync();
            yield return Wait(ask);
            if (Failed(ask)) yield break;
            var trial = ask.Result.Trials[0];

            Show(trial.Stimulus);
            float shownAt = Time.realtimeSinceStartup;
            yield return new WaitUntil(() => Input.GetKeyDown(KeyCode.Y) || Input.GetKeyDown(KeyCode.N));
            double seen = Input.GetKeyDown(KeyCode.Y) ? 1 : 0;
            float rt = Time.realtimeSinceStartup - shownAt;
            stimulus.enabled = false;

            var metadata = new Dictionary<string, string> { { "rt", rt.ToString("R", CultureInfo.InvariantCulture) } };
            var tell = client.TellAsync(trial.TrialId, seen, metadata);
            yield return Wait(tell);
            if (Failed(tell)) yield break;
            if (ask.Result.IsFinished) break;
        }
        Debug.Log("psyserve: experiment finished");
    }

    void Show(Stimulus s)
    {
        float contrast = (float)s["contrast"], size = (float)s["size"];
        stimulus.material.color = new Color(0.5f + 0.5f * contrast, 0.5f + 0.5f * contrast, 0.5f + 0.5f * contrast, 1f);
        stimulus.transform.localScale = new Vector3(size, size, 1f);
        stimulus.enabled = true;
    }

    /// <summary>Yields until the task is done, checking once per frame.</summary>
    static IEnumerator Wait(Task task)
    {
        while (!task.IsCompleted) yield return null;
    }

    static bool Failed(Task task)
    {
        if (!task.IsFaulted && !task.IsCanceled) return false;
        var error = task.Exception == null ? null : task.Exception.GetBaseException();
        var psy = error as PsyserveException;
        if (psy != null) Debug.LogError("psyserve " + psy.Code + (psy.Field != null ? " [" + psy.Field + "]" : "") + ": " + psy.Message);
        else Debug.LogError("psyserve call failed: " + error);
        return true;
    }

    void OnDestroy()
    {
        if (client != null) client.Dispose();
    }
}
