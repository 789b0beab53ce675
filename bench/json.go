// Marshals and unmarshals one record in a loop: encoding/json's encoder and decoder methods,
// many functions with many probes, for bench/detach.sh.
package main

import (
	"encoding/json"
)

type rec struct {
	Name  string
	Tags  []string
	Score float64
	Inner map[string]int
}

func main() {
	r := rec{Name: "x", Tags: []string{"a", "b"}, Score: 1.5, Inner: map[string]int{"k": 1}}
	for {
		b, err := json.Marshal(r)
		if err != nil {
			panic(err)
		}
		var out rec
		if err := json.Unmarshal(b, &out); err != nil {
			panic(err)
		}
	}
}
