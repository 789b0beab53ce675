// Command demo is a tiny order-processing service for trying escapade on:
//
//	cargo xtask demo
//
// It prints "demo: pid <pid> serving", then processes about 200 synthetic orders a second on
// several goroutines until it is killed. The functions worth tracing are parseOrder,
// (*Store).Put and price; they are marked //go:noinline so they stay real functions.
package main

import (
	"fmt"
	"math/rand"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Order is one parsed order line.
type Order struct {
	ID   int64
	SKU  string
	Qty  int
	Unit float64
}

// parseOrder parses a line like "id=42 sku=ABC-1 qty=3 price=9.99".
//
//go:noinline
func parseOrder(line string) (Order, error) {
	var o Order
	for _, field := range strings.Fields(line) {
		key, value, ok := strings.Cut(field, "=")
		if !ok {
			return Order{}, fmt.Errorf("field %q: missing '='", field)
		}
		var err error
		switch key {
		case "id":
			o.ID, err = strconv.ParseInt(value, 10, 64)
		case "sku":
			o.SKU = value
		case "qty":
			o.Qty, err = strconv.Atoi(value)
		case "price":
			o.Unit, err = strconv.ParseFloat(value, 64)
		default:
			err = fmt.Errorf("unknown key")
		}
		if err != nil {
			return Order{}, fmt.Errorf("field %q: %w", field, err)
		}
	}
	if o.SKU == "" || o.Qty <= 0 {
		return Order{}, fmt.Errorf("incomplete order %q", line)
	}
	return o, nil
}

// Store keeps the most recent orders by ID.
type Store struct {
	mu     sync.Mutex
	orders map[int64]Order
}

// keep is how many orders the store holds at most, so memory stays bounded.
const keep = 1000

// Put stores o and returns how many orders the store holds.
//
//go:noinline
func (s *Store) Put(o Order) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.orders[o.ID] = o
	if len(s.orders) > keep {
		// Drop all but the newest ~500: this runs every ~500 orders.
		for id := range s.orders {
			if id <= o.ID-keep/2 {
				delete(s.orders, id)
			}
		}
	}
	return len(s.orders)
}

// price is the total for qty items at unit each, 10% off with a discount.
//
//go:noinline
func price(qty int, unit float64, discount bool) float64 {
	total := float64(qty) * unit
	if discount {
		total *= 0.9
	}
	return total
}

var skus = []string{"ABC-1", "ABC-2", "XYZ-9", "KLM-4"}

// worker makes up an order line every few milliseconds and processes it.
func worker(store *Store, nextID func() int64, every time.Duration) {
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	for {
		time.Sleep(every)
		line := fmt.Sprintf("id=%d sku=%s qty=%d price=%.2f",
			nextID(), skus[rng.Intn(len(skus))], 1+rng.Intn(5), 1+rng.Float64()*20)
		order, err := parseOrder(line)
		if err != nil {
			fmt.Fprintln(os.Stderr, "demo:", err)
			continue
		}
		store.Put(order)
		_ = price(order.Qty, order.Unit, order.Qty >= 3)
	}
}

func main() {
	const workers = 4
	store := &Store{orders: make(map[int64]Order)}
	var mu sync.Mutex
	var id int64
	nextID := func() int64 {
		mu.Lock()
		defer mu.Unlock()
		id++
		return id
	}

	fmt.Printf("demo: pid %d serving\n", os.Getpid())
	// 4 workers, one order every 20ms each: about 200 orders a second.
	for i := 0; i < workers; i++ {
		go worker(store, nextID, 20*time.Millisecond)
	}
	select {}
}
