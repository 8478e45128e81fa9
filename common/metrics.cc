#include "metrics.h"

#include <fmt/format.h>

#include <cmath>

#include "log.h"

namespace cairn {

const std::vector<double> LATENCY_BUCKETS = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                             0.01,   0.025,   0.05,   0.1,   0.25,   0.5,
                                             1,      2.5,     5,      10};

namespace {

std::string number(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (std::isnan(v)) return "NaN";
  if (v == std::floor(v) && std::fabs(v) < 1e15) return fmt::format("{}", static_cast<int64_t>(v));
  return fmt::format("{}", v);
}

const char* typeName(Metrics::Type t) {
  switch (t) {
    case Metrics::Type::COUNTER:
      return "counter";
    case Metrics::Type::GAUGE:
      return "gauge";
    case Metrics::Type::HISTOGRAM:
      return "histogram";
  }
  return "untyped";
}

// The label set with one more label (the histogram's `le`), rendered.
std::string withLe(const std::string& rendered, const std::string& le) {
  std::string pair = fmt::format("le=\"{}\"", le);
  if (rendered.empty()) return "{" + pair + "}";
  return rendered.substr(0, rendered.size() - 1) + "," + pair + "}";
}

}  // namespace

std::string renderLabels(const Labels& labels) {
  if (labels.empty()) return "";
  std::string out = "{";
  for (auto& [k, v] : labels) {
    if (out.size() > 1) out += ',';
    out += k;
    out += "=\"";
    for (char c : v) {
      if (c == '\\')
        out += "\\\\";
      else if (c == '"')
        out += "\\\"";
      else if (c == '\n')
        out += "\\n";
      else
        out += c;
    }
    out += '"';
  }
  return out + "}";
}

void Metrics::describe(const std::string& name, Type type, std::string help,
                       std::vector<double> buckets) {
  std::lock_guard<std::mutex> lock(mutex);
  auto [it, added] = families.try_emplace(name);
  if (!added) return;
  it->second.type = type;
  it->second.help = std::move(help);
  it->second.buckets = std::move(buckets);
}

Metrics::Family* Metrics::family(const std::string& name, Type type) {
  auto it = families.find(name);
  if (it == families.end() || it->second.type != type) {
    logWarn("metric {} used as a {} without being described so", name, typeName(type));
    return nullptr;
  }
  return &it->second;
}

void Metrics::add(const std::string& name, const Labels& labels, double by) {
  std::lock_guard<std::mutex> lock(mutex);
  if (Family* f = family(name, Type::COUNTER)) f->series[renderLabels(labels)].value += by;
}

void Metrics::observe(const std::string& name, const Labels& labels, double value) {
  std::lock_guard<std::mutex> lock(mutex);
  Family* f = family(name, Type::HISTOGRAM);
  if (f == nullptr) return;
  Series& s = f->series[renderLabels(labels)];
  if (s.counts.empty()) s.counts.assign(f->buckets.size() + 1, 0);
  size_t i = 0;
  while (i < f->buckets.size() && value > f->buckets[i]) ++i;
  ++s.counts[i];
  s.sum += value;
  ++s.count;
}

void Metrics::collect(std::function<void(const GaugeSink&)> collector) {
  std::lock_guard<std::mutex> lock(mutex);
  collectors.push_back(std::move(collector));
}

std::string Metrics::render() {
  // Gauges are sampled first, outside the lock (collectors may take their own).
  std::vector<std::function<void(const GaugeSink&)>> sample;
  {
    std::lock_guard<std::mutex> lock(mutex);
    sample = collectors;
  }
  std::map<std::string, std::map<std::string, double>> gauges;
  GaugeSink sink = [&gauges](const std::string& name, const Labels& labels, double v) {
    gauges[name][renderLabels(labels)] = v;
  };
  for (auto& c : sample) c(sink);

  std::lock_guard<std::mutex> lock(mutex);
  std::string out;
  for (auto& [name, f] : families) {
    // Collectors set gauges (only what they set now is shown) and counters kept elsewhere.
    if (f.type == Type::GAUGE) f.series.clear();
    if (f.type != Type::HISTOGRAM) {
      auto sampled = gauges.find(name);
      if (sampled != gauges.end()) {
        for (auto& [labels, v] : sampled->second) f.series[labels].value = v;
      }
    }
    if (f.series.empty()) continue;
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, f.help, name, typeName(f.type));
    for (auto& [labels, s] : f.series) {
      if (f.type != Type::HISTOGRAM) {
        out += fmt::format("{}{} {}\n", name, labels, number(s.value));
        continue;
      }
      uint64_t cumulative = 0;
      for (size_t i = 0; i < f.buckets.size(); ++i) {
        cumulative += s.counts[i];
        out +=
            fmt::format("{}_bucket{} {}\n", name, withLe(labels, number(f.buckets[i])), cumulative);
      }
      out += fmt::format("{}_bucket{} {}\n", name, withLe(labels, "+Inf"), s.count);
      out += fmt::format("{}_sum{} {}\n{}_count{} {}\n", name, labels, number(s.sum), name, labels,
                         s.count);
    }
  }
  return out;
}

}  // namespace cairn
