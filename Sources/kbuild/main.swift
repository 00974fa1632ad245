import KbuildCLI

await KbuildMain.run()
