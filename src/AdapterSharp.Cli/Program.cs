Console.WriteLine("adaptersharp: under construction");
