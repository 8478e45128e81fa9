#pragma once
// A daemon's Prometheus metrics, rendered in the text exposition format (version 0.0.4)
// for /metrics. Names start with cairn_ and are in base units (seconds, bytes). Counters
// and histograms are updated where things happen (from any thread); gauges (and counters
// kept by others) are read when scraped, by collectors that run on the thread that renders
// (the daemon's event loop).

#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace cairn {

using Labels = std::vector<std::pair<std::string, std::string>>;

// Bucket bounds in seconds for request latencies: 100 µs to 10 s.
extern const std::vector<double> LATENCY_BUCKETS;

class Metrics {
 public:
  enum class Type { COUNTER, GAUGE, HISTOGRAM };
  // A family must be described before it is used; describing it again changes nothing.
  void describe(const std::string& name, Type type, std::string help,
                std::vector<double> buckets = {});
  void add(const std::string& name, const Labels& labels, double by = 1);
  void observe(const std::string& name, const Labels& labels, double value);

  // Called at every scrape to set gauges, or counters kept elsewhere: `set(name, labels,
  // value)`.
  using GaugeSink = std::function<void(const std::string&, const Labels&, double)>;
  void collect(std::function<void(const GaugeSink&)> collector);

  std::string render();

 private:
  struct Series {
    double value = 0;              // counters and gauges
    std::vector<uint64_t> counts;  // histograms: per bucket (not cumulative), then +Inf
    double sum = 0;
    uint64_t count = 0;
  };
  struct Family {
    Type type = Type::COUNTER;
    std::string help;
    std::vector<double> buckets;
    std::map<std::string, Series> series;  // by rendered label set
  };
  Family* family(const std::string& name, Type type);

  std::mutex mutex;
  std::map<std::string, Family> families;
  std::vector<std::function<void(const GaugeSink&)>> collectors;
};

// `{a="x",b="y"}` with values escaped as the exposition format asks ("" for none).
std::string renderLabels(const Labels& labels);

}  // namespace cairn
