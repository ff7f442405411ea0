namespace AdapterSharp;

/// <summary>Error messages, which quote untrusted text (file contents, names, request bodies).</summary>
public static class Messages
{
    /// <summary><paramref name="text"/> with control characters (line breaks among them) escaped as <c>\uXXXX</c>: one line.</summary>
    public static string OneLine(string text) =>
        text.Any(char.IsControl)
            ? string.Concat(text.Select(c => char.IsControl(c) ? $"\\u{(int)c:x4}" : c.ToString()))
            : text;
}
