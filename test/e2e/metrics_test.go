//go:build e2e

package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// metricSample is one sample of the Prometheus text exposition format.
type metricSample struct {
	name   string
	labels map[string]string
	value  float64
}

// metrics is one scrape of a replica's /metrics.
type metrics []metricSample

// sum adds the samples of name whose labels include every pair of match.
func (m metrics) sum(name string, match map[string]string) float64 {
	var total float64
	for _, s := range m {
		if s.name != name {
			continue
		}
		ok := true
		for k, v := range match {
			if s.labels[k] != v {
				ok = false
				break
			}
		}
		if ok {
			total += s.value
		}
	}
	return total
}

// has reports whether the scrape holds any sample of name.
func (m metrics) has(name string) bool {
	for _, s := range m {
		if s.name == name {
			return true
		}
	}
	return false
}

// metricsClient scrapes the replicas' HTTPS /metrics. The managers serve
// it with a certificate they generate at start, which no CA signs; the
// connection is loopback only.
var metricsClient = &http.Client{
	Timeout:   10 * time.Second,
	Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
}

// scrapeMetrics reads a replica's /metrics as Prometheus does: HTTPS with
// the scraper ServiceAccount's bearer token, which the manager checks with
// a TokenReview and a SubjectAccessReview.
func (s *system) scrapeMetrics(ctx context.Context, r *replica) (metrics, error) {
	if r.metricsAddr == "" {
		return nil, fmt.Errorf("%s serves no metrics (the system was started without them)", r.name)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+r.metricsAddr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+s.metricsToken)
	resp, err := metricsClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scraping %s: %w", r.name, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("scraping %s: reading the answer: %w", r.name, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scraping %s: %s %s", r.name, resp.Status, strings.TrimSpace(string(body)))
	}
	return parseMetrics(string(body))
}

// parseMetrics reads the samples of the text exposition format (version
// 0.0.4): `name{label="value",...} value [timestamp]` lines, comments
// skipped.
func parseMetrics(text string) (metrics, error) {
	var out metrics
	for n, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		s, err := parseSample(line)
		if err != nil {
			return nil, fmt.Errorf("metrics line %d %q: %w", n+1, line, err)
		}
		out = append(out, s)
	}
	return out, nil
}

func parseSample(line string) (metricSample, error) {
	s := metricSample{labels: map[string]string{}}
	i := strings.IndexAny(line, "{ ")
	if i <= 0 {
		return s, fmt.Errorf("no metric name")
	}
	s.name, line = line[:i], line[i:]
	if strings.HasPrefix(line, "{") {
		line = line[1:]
		for {
			line = strings.TrimLeft(line, ", ")
			if strings.HasPrefix(line, "}") {
				line = line[1:]
				break
			}
			eq := strings.Index(line, `="`)
			if eq <= 0 {
				return s, fmt.Errorf("malformed label")
			}
			key := line[:eq]
			line = line[eq+2:]
			var val strings.Builder
			closed := false
			for j := 0; j < len(line); j++ {
				switch c := line[j]; {
				case c == '\\' && j+1 < len(line):
					j++
					if line[j] == 'n' {
						val.WriteByte('\n')
					} else {
						val.WriteByte(line[j])
					}
				case c == '"':
					line, closed = line[j+1:], true
				default:
					val.WriteByte(c)
				}
				if closed {
					break
				}
			}
			if !closed {
				return s, fmt.Errorf("unterminated label value")
			}
			s.labels[key] = val.String()
		}
	}
	fields := strings.Fields(line)
	if len(fields) == 0 {
		return s, fmt.Errorf("no value")
	}
	v, err := strconv.ParseFloat(fields[0], 64)
	if err != nil {
		return s, fmt.Errorf("value: %w", err)
	}
	s.value = v
	return s, nil
}
