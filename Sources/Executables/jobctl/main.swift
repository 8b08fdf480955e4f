import JobCtl

await JobCtlMain.main()
