module escapade-demo

go 1.21
