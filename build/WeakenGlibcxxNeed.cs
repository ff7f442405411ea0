// MSBuild inline task (RoslynCodeTaskFactory). TorchSharp 0.107's libLibTorchSharp.so asks libstdc++ for
// GLIBCXX_3.4.32 (GCC 13) for one symbol, _ZSt21ios_base_library_initv, which older libstdc++ (Debian 12,
// Ubuntu 22.04: GCC 12) lacks, so dlopen fails. Marking that version requirement weak (VER_FLG_WEAK) in
// .gnu.version_r lets the loader accept the library; the symbol itself is only a static-init helper.
// The patch runs on the copy in the build/publish output, never on the NuGet cache, is idempotent, and
// rewrites the file (temp + rename) only when some entry actually needs the flag.
using System;
using System.IO;
using System.Text;
using Microsoft.Build.Framework;
using Microsoft.Build.Utilities;

public sealed class WeakenGlibcxxNeed : Task
{
    [Required] public string File { get; set; } = "";
    [Required] public string Versions { get; set; } = "";

    const uint ShtGnuVerneed = 0x6ffffffe;
    const ushort VerFlgWeak = 0x2;

    public override bool Execute()
    {
        if (!System.IO.File.Exists(File)) return true;
        byte[] elf = System.IO.File.ReadAllBytes(File);
        if (elf.Length < 64 || elf[0] != 0x7f || elf[1] != (byte)'E' || elf[2] != (byte)'L' || elf[3] != (byte)'F' || elf[4] != 2 || elf[5] != 1)
        {
            Log.LogWarning($"{File}: not a little-endian ELF64 file; not patched");
            return true;
        }
        var wanted = Versions.Split(new[] { ';', ',' }, StringSplitOptions.RemoveEmptyEntries);
        long shoff = (long)BitConverter.ToUInt64(elf, 0x28);
        int shentsize = BitConverter.ToUInt16(elf, 0x3A);
        int shnum = BitConverter.ToUInt16(elf, 0x3C);
        int patched = 0;
        for (int i = 0; i < shnum; i++)
        {
            long sh = shoff + (long)i * shentsize;
            if (sh + 64 > elf.Length) break;
            if (BitConverter.ToUInt32(elf, (int)sh + 4) != ShtGnuVerneed) continue;
            long secOff = (long)BitConverter.ToUInt64(elf, (int)sh + 0x18);
            int link = (int)BitConverter.ToUInt32(elf, (int)sh + 0x28);
            long strOff = (long)BitConverter.ToUInt64(elf, (int)(shoff + (long)link * shentsize) + 0x18);
            long need = secOff;
            while (true)
            {
                int cnt = BitConverter.ToUInt16(elf, (int)need + 2);
                long aux = need + BitConverter.ToUInt32(elf, (int)need + 8);
                for (int a = 0; a < cnt; a++)
                {
                    string name = ReadCString(elf, strOff + BitConverter.ToUInt32(elf, (int)aux + 8));
                    ushort flags = BitConverter.ToUInt16(elf, (int)aux + 4);
                    if (Array.IndexOf(wanted, name) >= 0 && (flags & VerFlgWeak) == 0)
                    {
                        BitConverter.GetBytes((ushort)(flags | VerFlgWeak)).CopyTo(elf, (int)aux + 4);
                        patched++;
                    }
                    uint nextAux = BitConverter.ToUInt32(elf, (int)aux + 12);
                    if (nextAux == 0) break;
                    aux += nextAux;
                }
                uint next = BitConverter.ToUInt32(elf, (int)need + 12);
                if (next == 0) break;
                need += next;
            }
        }
        if (patched == 0) return true;
        string tmp = File + ".patching";
        System.IO.File.WriteAllBytes(tmp, elf);
        System.IO.File.Replace(tmp, File, null);
        Log.LogMessage(MessageImportance.High, $"AdapterSharp: marked {string.Join(",", wanted)} weak in {File}");
        return true;
    }

    static string ReadCString(byte[] b, long at)
    {
        int end = (int)at;
        while (end < b.Length && b[end] != 0) end++;
        return Encoding.ASCII.GetString(b, (int)at, end - (int)at);
    }
}
