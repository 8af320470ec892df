// Package loadstats is the JSON that bench/load prints and bench/run reads: one definition, so
// the producer and the consumer cannot drift apart.
package loadstats

// Stats is one fairness pass: per-connection counts and what they say.
type Stats struct {
	Conns     int       `json:"conns"`
	Seconds   float64   `json:"seconds"`
	Requests  int64     `json:"requests"`
	RPS       float64   `json:"rps"`
	Errors    int64     `json:"errors"`
	ErrorText []string  `json:"error_samples,omitempty"`
	PerConn   []int64   `json:"per_conn"`
	Jain      float64   `json:"jain"`
	MinMean   float64   `json:"min_mean"`
	Served    int       `json:"served"` // connections that got at least one response
	Min       int64     `json:"min"`
	Max       int64     `json:"max"`
	LatencyMS Latencies `json:"latency_ms"`
}

// Latencies are response-time percentiles in milliseconds.
type Latencies struct {
	P50 float64 `json:"p50"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}
