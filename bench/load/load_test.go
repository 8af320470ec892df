package main

import (
	"math"
	"testing"
)

func TestFairness(t *testing.T) {
	for _, c := range []struct {
		in            []int64
		jain, minMean float64
	}{
		{[]int64{5, 5, 5, 5}, 1, 1},
		{[]int64{8, 0, 0, 0}, 0.25, 0}, // one of four connections got everything
		{[]int64{4, 4, 0, 0}, 0.5, 0},  // two of four
		{[]int64{30, 10, 10, 10}, 0.75, 0.666667},
		{[]int64{0, 0}, 0, 0},
	} {
		jain, mm, _, _ := fairness(c.in)
		if math.Abs(jain-c.jain) > 1e-6 || math.Abs(mm-c.minMean) > 1e-6 {
			t.Errorf("fairness(%v) = %.6f, %.6f; want %.6f, %.6f", c.in, jain, mm, c.jain, c.minMean)
		}
	}
}
