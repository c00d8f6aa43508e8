"""Device peak rates, to give achieved FLOP and byte rates as fractions."""

# Datasheet peaks per device kind (NVIDIA's SXM parts: H100 80GB HBM3, H200
# 141GB HBM3e): HBM bandwidth in GB/s and dense TFLOP/s per dtype (float32
# without tensor cores). H100 and H200 share the compute die. A device kind
# is matched by these words in its name.
PEAKS = (
    (('h100',), {'gb_per_s': 3350.0,
                 'tflops_per_s': {'float32': 67.0, 'bfloat16': 990.0}}),
    (('h200',), {'gb_per_s': 4800.0,
                 'tflops_per_s': {'float32': 67.0, 'bfloat16': 990.0}}),
)


def device_peaks(device_kind: str, dtype: str) -> dict:
  """The peak rates of a known device kind; empty when unknown."""
  name = device_kind.lower()
  for words, peaks in PEAKS:
    if all(word in name for word in words):
      return {'peak_gb_per_s': peaks['gb_per_s'],
              'peak_tflops_per_s': peaks['tflops_per_s'].get(dtype)}
  return {}


def achieved(result, dtype: str, device_kind: str) -> dict:
  """Achieved rates from the step's cost and speed; fractions of the peaks."""
  rates = {}
  steps_per_s = result.get('steps_per_s')
  if not steps_per_s:
    return rates
  if result.get('flops_per_step'):
    rates['tflops_per_s'] = result['flops_per_step'] * steps_per_s / 1e12
  if result.get('bytes_per_step'):
    rates['gb_per_s'] = result['bytes_per_step'] * steps_per_s / 1e9
  peaks = device_peaks(device_kind, dtype)
  rates.update(peaks)
  for rate, peak, fraction in (
      ('tflops_per_s', 'peak_tflops_per_s', 'tflops_fraction'),
      ('gb_per_s', 'peak_gb_per_s', 'bandwidth_fraction')):
    if rates.get(rate) and peaks.get(peak):
      rates[fraction] = rates[rate] / peaks[peak]
  return rates

